"""Range checks for settings where they enter (module, datamodule and estimator constructors).

Each error is one line naming the config key and its value, e.g. ``model.lr == -0.01, must be >= 0.`` (the message of
scikit-learn's ``check_scalar``); NaN is never in range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, Literal

from sklearn.utils import check_scalar


def check_number(
    name: str,
    value: Any,
    *,
    min_val: float | None = None,
    max_val: float | None = None,
    closed: Literal["both", "left", "right", "neither"] = "both",
    integer: bool = False,
) -> Any:
    """Return ``value`` if it is a number (an integer with ``integer``) in the range; else raise naming ``name``."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and math.isnan(value):
        raise ValueError(f"{name} == nan, must be a number")
    check_scalar(
        value,
        name,
        numbers.Integral if integer else numbers.Real,
        min_val=min_val,
        max_val=max_val,
        include_boundaries=closed,
    )
    return value


def check_numbers(name: str, values: Iterable[Any], **range_) -> None:
    """:func:`check_number` for every element, named ``name[i]``."""
    for i, value in enumerate(values):
        check_number(f"{name}[{i}]", value, **range_)


def check_batch(prefix: str, batch_size: Any, num_workers: Any = 0) -> None:
    """The loader settings every datamodule has."""
    check_number(f"{prefix}.batch_size", batch_size, min_val=1, integer=True)
    check_number(f"{prefix}.num_workers", num_workers, min_val=0, integer=True)
