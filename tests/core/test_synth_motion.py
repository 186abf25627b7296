"""The generator's activity cue: the kind of motion leans towards the emotion strongly enough to learn, never fully."""

from __future__ import annotations

import numpy as np

from emotiw.labels import NUM_CLASSES
from emotiw.synth.afew import MOTION_PRIOR, MOTIONS, _motion
from emotiw.synth.presets import AFEW_BALANCE, DIFFICULTIES


def _kind_given_label(name: str) -> np.ndarray:
    """P(kind | emotion) as render_clip draws it."""
    d = DIFFICULTIES[name]
    p = d.motion_bias * MOTION_PRIOR + (1 - d.motion_bias) / len(MOTIONS)
    p = (1 - d.motion_uninformative) * p / p.sum(1, keepdims=True)
    p[:, MOTIONS.index("still")] += d.motion_uninformative
    return p


def test_each_emotion_leans_to_a_kind_of_its_own() -> None:
    assert MOTION_PRIOR.shape == (NUM_CLASSES, len(MOTIONS))
    np.testing.assert_allclose(MOTION_PRIOR.sum(1), 1.0)
    assert len(set(MOTION_PRIOR.argmax(1).tolist())) == NUM_CLASSES


def test_a_perfect_motion_model_beats_chance_but_stays_far_from_perfect() -> None:
    prior = np.asarray(AFEW_BALANCE, float) / sum(AFEW_BALANCE)
    for name, lo, hi in (("paper", 0.35, 0.5), ("easy", 0.5, 0.7)):
        joint = prior[:, None] * _kind_given_label(name)
        bayes = joint.max(0).sum()  # accuracy of the best guess of the emotion from the true kind of motion
        assert lo < bayes < hi, (name, bayes)
        assert bayes > 2 * prior.max()


def test_every_kind_but_still_moves_the_camera_and_kinds_differ_in_speed() -> None:
    speed = {}
    for kind in MOTIONS:
        m = _motion(np.random.default_rng(3), kind, 100)
        assert m["head"].shape == m["pan"].shape == (100, 2) and np.isfinite(m["pan"]).all()
        speed[kind] = float(np.abs(np.diff(m["pan"], axis=0)).mean())
    assert speed["still"] == 0.0 and all(speed[k] > 0 for k in MOTIONS if k != "still")
    assert speed["tremble"] > speed["bob"] > speed["slow"] and speed["agitated"] > speed["calm"]
    # Deterministic by the random stream.
    a, b = (_motion(np.random.default_rng(5), "recoil", 50) for _ in range(2))
    np.testing.assert_array_equal(a["pan"], b["pan"])
