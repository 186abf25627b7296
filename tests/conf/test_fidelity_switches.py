"""Each deviation switch of docs/pipeline.md ("Deviations from the paper") defaults to the paper or the authors' code:
the composed config is compared with the value written here from paper-spec.md, independently of the YAML files."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import compose_cfg


def test_audio_column_filter_is_the_authors_zero_sum_on_the_tuning_set(tmp_path: Path) -> None:
    # paper-spec §5: "drop dimensions whose sum over the validation set is 0"
    cfg = compose_cfg(["stage=audio"], tmp_path)
    assert cfg.data.column_filter == "zero_sum_on_tune"
