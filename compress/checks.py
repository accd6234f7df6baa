"""Argument checks shared by the library's packages (one wording for every integer setting)."""

from __future__ import annotations

import numpy as np


def check_int(value: object, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``: TypeError for a non-integer (bools included),
    ValueError naming ``name`` and the value when it is out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int in {low}..{high}, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return int(value)
