"""The canonical order is the FER2013 order; AFEW's alphabetical folder order maps as the authors' code does."""

from emotiw import labels


def test_canonical_order_is_fer2013() -> None:
    assert labels.EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_afew_alphabetical_permutation_matches_paper_spec() -> None:
    # paper-spec §10: alphabetical index a -> FER index [0,1,2,3,6,4,5]
    assert labels.AFEW_ALPHABETICAL_TO_CANONICAL == (0, 1, 2, 3, 6, 4, 5)
