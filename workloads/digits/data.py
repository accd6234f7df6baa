"""scikit-learn's digits (1797 8x8 images, shipped with scikit-learn: no download), split once.

The split is stratified and seeded, so every run and every seed sees the same test set.
Needs scikit-learn (the ``examples`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLIT_SEED = 0
TEST_SHARE = 0.25


@dataclass(frozen=True)
class DigitsSplit:
    """The training and test images (float32 ``[n, 64]``, pixels scaled to [0, 1]) and labels
    (int64 ``[n]``)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split() -> DigitsSplit:
    """The fixed stratified train/test split (75% / 25%) of scikit-learn's digits."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "the digits workload needs scikit-learn: pip install 'deep-compression[examples]'"
        ) from exc
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SHARE, stratify=y, random_state=SPLIT_SEED
    )
    return DigitsSplit(*(torch.from_numpy(a) for a in (x_train, y_train, x_test, y_test)))
