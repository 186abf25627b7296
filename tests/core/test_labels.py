"""Every label mapping of emotiw.labels, against the facts in paper-spec §10."""

import pytest

from emotiw import labels


def test_canonical_order_is_fer2013():
    assert labels.EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert labels.NUM_CLASSES == 7


@pytest.mark.parametrize("code", range(7))
def test_fer2013_codes_are_canonical(code):
    assert labels.from_fer2013(code) == code
    assert labels.from_fer2013(str(code)) == code


@pytest.mark.parametrize("code", [-1, 7, 12])
def test_fer2013_out_of_range(code):
    with pytest.raises(ValueError, match=f"0..6, got {code}"):
        labels.from_fer2013(code)


@pytest.mark.parametrize(
    ("tfd", "canon"),
    [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6), (0, -1), (-1, -1)],
)
def test_tfd_codes(tfd, canon):
    assert labels.from_tfd(tfd) == canon


@pytest.mark.parametrize("idx", range(-1, 7))
def test_tfd_round_trip(idx):
    assert labels.from_tfd(labels.to_tfd(idx)) == idx


@pytest.mark.parametrize("code", [8, -2])
def test_tfd_out_of_range(code):
    with pytest.raises(ValueError, match=f"got {code}"):
        labels.from_tfd(code)


@pytest.mark.parametrize(
    ("name", "idx"),
    [("Angry", 0), ("disgust", 1), ("FEAR", 2), (" happy ", 3), ("Sad", 4), ("surprise", 5), ("Neutral", 6)],
)
def test_from_name_any_case(name, idx):
    assert labels.from_name(name) == idx


def test_from_name_unknown():
    with pytest.raises(ValueError, match="unknown emotion 'contempt'"):
        labels.from_name("contempt")


def test_afew_folders():
    assert [labels.afew_folder(i) for i in range(7)] == [
        "Angry",
        "Disgust",
        "Fear",
        "Happy",
        "Sad",
        "Surprise",
        "Neutral",
    ]


def test_afew_alphabetical_permutation():
    # Alphabetical folder order Angry Disgust Fear Happy Neutral Sad Surprise -> FER order (paper-spec §10).
    assert labels.AFEW_ALPHABETICAL_TO_CANONICAL == (0, 1, 2, 3, 6, 4, 5)
    for a, name in enumerate(sorted(labels.AFEW_FOLDERS)):
        assert labels.EMOTIONS[labels.AFEW_ALPHABETICAL_TO_CANONICAL[a]] == name.lower()
