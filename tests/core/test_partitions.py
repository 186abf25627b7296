from pathlib import Path

import pytest
from omegaconf import OmegaConf

from emotiw.artifacts import save_json
from emotiw.partitions import Partition, chosen_path, frozen_choice


def test_paper_partitions_from_config_files() -> None:
    conf = Path(__file__).resolve().parents[2] / "conf" / "partition"
    standard = Partition.from_config(OmegaConf.load(conf / "standard.yaml"))
    swapped = Partition.from_config(OmegaConf.load(conf / "swapped.yaml"))
    assert (standard.fit, standard.tune) == (("Train",), ("Val",))
    assert (swapped.fit, swapped.tune) == (("Val",), ("Train",))
    retrain = OmegaConf.load(conf / "retrain.yaml")
    retrain.from_run = "submission2"
    p = Partition.from_config(retrain)
    assert p.is_retrain and p.fit == ("Train", "Val") and p.from_run == "submission2"


@pytest.mark.parametrize(
    ("fit", "tune", "from_run", "match"),
    [
        (("Test",), ("Val",), None, "split 'Test' is not one of Train, Val"),
        ((), ("Val",), None, "names no split"),
        (("Train",), ("Train",), None, "both fits and tunes"),
        (("Train", "Val"), (), None, "must name `from_run`"),
    ],
)
def test_invalid_partitions(fit, tune, from_run, match) -> None:
    with pytest.raises(ValueError, match=match):
        Partition("p", fit, tune, from_run)


def test_frozen_choice_reads_the_source_run(tmp_path: Path) -> None:
    save_json(chosen_path(tmp_path / "submission2", "irnn"), {"best_epoch": 37})
    retrain = Partition("retrain", ("Train", "Val"), (), "submission2")
    assert frozen_choice(retrain, tmp_path, "irnn") == {"best_epoch": 37}
    assert frozen_choice(Partition("standard", ("Train",), ("Val",)), tmp_path, "irnn") is None
    with pytest.raises(
        FileNotFoundError, match=r"submission2/audio/chosen\.json.*experiment_name=submission2"
    ):
        frozen_choice(retrain, tmp_path, "audio")
