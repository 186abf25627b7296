"""The whole chain as the README's demo runs it: `python train.py experiment=submission2 scale=demo` (make_data -> cnn
-> faces -> features -> irnn | aggcnn | audio | activity -> fusion -> combine -> report) on the `demo` generated set at
the default (`paper`) difficulty. Judged on Test, the split nothing was fitted or chosen on (Val picked every epoch,
SVM hyperparameter and combination weight): every single model of Table 1 beats chance, and the fusion network and the
random-search combination beat the best of them (the paper's Table 1 claim in miniature).

The README's "A demo run" gives this run's time and Table 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from emotiw.artifacts import load_json, load_probs
from emotiw.report import SINGLE_MODELS
from tests.helpers import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], float]:
    """Run the demo once; Table 1's Test accuracy per model (from the report) and chance on Test."""
    root = tmp_path_factory.mktemp("demo")
    run(["experiment=submission2", "scale=demo"], root)
    run_dir = root / "runs" / "submission2"
    assert (run_dir / "report.md").is_file()
    table1 = load_json(run_dir / "report" / "tables.json")["table1"]
    test = {row["model"]: row["test"] for row in table1}
    labels = load_probs(run_dir, "combine", "Test").labels
    assert len(labels) == 84  # every generated Test clip is scored
    chance = float(np.bincount(labels).max() / len(labels))  # always guessing the most frequent emotion
    print(f"demo Test accuracy: {test}, chance {chance:.3f}")  # visible with -s
    return test, chance


@pytest.mark.parametrize("model", SINGLE_MODELS)
def test_every_single_model_beats_chance_on_test(demo: tuple[dict[str, float], float], model: str) -> None:
    test, chance = demo
    assert test[model] > chance, (model, test, chance)


@pytest.mark.parametrize("model", ["fusion", "combine"])
def test_fusion_and_combination_beat_the_best_single_model_on_test(
    demo: tuple[dict[str, float], float], model: str
) -> None:
    test, _ = demo
    assert test[model] > max(test[m] for m in SINGLE_MODELS), test
