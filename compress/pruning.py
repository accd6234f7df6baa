"""Magnitude pruning (the paper's stage 1): masks, thresholds, mask enforcement, L2 helper.

A mask is a bool tensor of the weight's shape, True where the weight is kept. Masks only ever
shrink: pruning again (a later stage of an iterative schedule) keeps a subset of what the
previous mask kept. ``nn.Conv2d`` weights are handled as matrices of their output channels
flattened (``weight.reshape(out_channels, -1)``); the masks keep the weight's own shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from compress.errors import ConfigError, EmptyLayerError, NonFiniteWeightError


def check_density(density: float, name: str = "density") -> float:
    """Validate a share of weights kept, in (0, 1]."""
    if isinstance(density, bool) or not isinstance(density, (int, float)):
        raise ConfigError(f"{name} must be a float in (0, 1], got {density!r}")
    if not 0.0 < float(density) <= 1.0:
        raise ConfigError(f"{name} must be in (0, 1], got {density}")
    return float(density)


def check_quality(quality: float) -> float:
    """Validate the paper's pruning quality parameter (threshold = quality x std), >= 0."""
    if isinstance(quality, bool) or not isinstance(quality, (int, float)):
        raise ConfigError(f"quality must be a non-negative float, got {quality!r}")
    if not 0.0 <= float(quality) < float("inf"):
        raise ConfigError(f"quality must be finite and >= 0, got {quality}")
    return float(quality)


def check_weight(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """A layer's weight as a matrix view (conv: output channels flattened), checked for
    emptiness and NaN/inf."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"layer {name!r}: weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() not in (2, 4):
        raise ValueError(
            f"layer {name!r}: weight must be 2-D (linear) or 4-D (conv), got shape {tuple(weight.shape)}"
        )
    if weight.numel() == 0:
        raise EmptyLayerError(f"layer {name!r}: weight of shape {tuple(weight.shape)} has no entries")
    if not weight.is_floating_point():
        raise TypeError(f"layer {name!r}: weight must be floating point, got {weight.dtype}")
    # A finite sum proves every weight finite (NaN and inf propagate) at a small share of the cost
    # of isfinite over a 100M-weight layer; an overflowing sum of finite weights is checked fully.
    finite = torch.isfinite(weight) if not math.isfinite(float(weight.detach().sum())) else None
    if finite is not None and not bool(finite.all()):
        bad = weight[~finite]
        raise NonFiniteWeightError(
            f"layer {name!r}: {bad.numel()} of {weight.numel()} weights are NaN or inf "
            f"(e.g. {bad.flatten()[0].item()})"
        )
    return weight.reshape(weight.shape[0], -1)


def magnitude_mask(
    weight: torch.Tensor, density: float, *, keep: torch.Tensor | None = None, name: str = "weight"
) -> torch.Tensor:
    """Keep exactly ``max(1, round(density * numel))`` weights of largest magnitude.

    ``keep`` (a previous mask) restricts the choice to weights it kept; the count is capped by
    what it kept. Ties in magnitude go to the lower flat position, so the mask is deterministic.
    """
    density = check_density(density)
    check_weight(weight, name)
    # Non-negative float32 magnitudes order exactly like their int32 bit patterns, so the
    # threshold is found by radix selection on integers (no sort of the layer).
    key = weight.detach().abs().flatten().to(torch.float32).view(torch.int32)
    if keep is not None:
        _check_mask(keep, weight, name)
        # Previously pruned positions rank below every kept one (kept keys shifted up by one).
        key = torch.where(keep.flatten(), key + 1, torch.zeros_like(key))
    available = key.numel() if keep is None else int(torch.count_nonzero(keep))
    if available == 0:
        raise EmptyLayerError(f"layer {name!r}: the previous mask keeps no weights")
    count = min(available, max(1, round(density * key.numel())))
    if count == key.numel():
        return torch.ones_like(weight, dtype=torch.bool)
    kth = _kth_largest(key, count)
    mask = key > kth
    # Fill up to `count` with the lowest positions among ties at the threshold.
    missing = count - int(torch.count_nonzero(mask))
    if missing:
        tied = torch.nonzero(key == kth).flatten()[:missing]
        mask[tied] = True
    return mask.reshape(weight.shape)


def _kth_largest(key: torch.Tensor, rank: int) -> int:
    """The ``rank``-th largest (from 1) of non-negative int32 ``key``: the bucket of the high 16
    bits that holds it from one histogram, then its low 16 bits from a histogram of that bucket
    alone (a few O(n) passes instead of a selection over the whole layer)."""
    high = key >> 16
    top, above = _bucket_of_rank(torch.bincount(high, minlength=1 << 15), rank)
    low = key[high == top] & 0xFFFF
    bottom, _ = _bucket_of_rank(torch.bincount(low, minlength=1 << 16), rank - above)
    return (top << 16) | bottom


def _bucket_of_rank(histogram: torch.Tensor, rank: int) -> tuple[int, int]:
    """The bucket holding the ``rank``-th largest entry and the number of entries above it."""
    at_or_above = histogram.flip(0).cumsum(0).flip(0)  # non-increasing
    bucket = int(torch.count_nonzero(at_or_above >= rank)) - 1
    above = int(at_or_above[bucket + 1]) if bucket + 1 < histogram.numel() else 0
    return bucket, above


def threshold_mask(
    weight: torch.Tensor,
    quality: float,
    *,
    std: float | None = None,
    keep: torch.Tensor | None = None,
    name: str = "weight",
) -> torch.Tensor:
    """The paper's rule: keep weights with ``|w| > quality * std``.

    ``std`` defaults to the standard deviation of ``weight`` itself (pass the dense layer's std to
    prune iteratively against a fixed reference). Raises :class:`EmptyLayerError` when nothing
    would be kept.
    """
    quality = check_quality(quality)
    check_weight(weight, name)
    if std is None:
        std = float(weight.detach().to(torch.float32).std()) if weight.numel() > 1 else 0.0
    threshold = quality * std
    mask = weight.detach().abs() > threshold
    if keep is not None:
        _check_mask(keep, weight, name)
        mask &= keep
    if not bool(mask.any()):
        largest = float(weight.detach().abs().max())
        raise EmptyLayerError(
            f"layer {name!r}: threshold {threshold:.6g} (quality {quality} x std {std:.6g}) "
            f"prunes every weight (largest magnitude {largest:.6g})"
        )
    return mask


def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned weights in place (call after every optimizer step)."""
    with torch.no_grad():
        weight.mul_(mask.to(weight.dtype))


def mask_gradient(weight: torch.Tensor, mask: torch.Tensor) -> torch.utils.hooks.RemovableHandle:
    """Zero the gradient of pruned weights as it is computed, so optimizer state (momentum,
    Adam moments) never moves them; returns the hook's handle."""
    factor = mask.to(weight.dtype)
    return weight.register_hook(lambda grad: grad * factor)


def l2_penalty(weights: Iterable[torch.Tensor], strength: float) -> torch.Tensor:
    """``strength * sum(w**2)`` over ``weights``: add it to the loss when retraining pruned
    layers (the paper found L2 regularization retrains better than L1 after pruning)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or strength < 0:
        raise ConfigError(f"L2 strength must be a float >= 0, got {strength!r}")
    terms = [w.pow(2).sum() for w in weights]
    if not terms:
        return torch.zeros(())
    return strength * torch.stack(terms).sum()


def _check_mask(mask: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"layer {name!r}: mask must be a bool tensor, got {getattr(mask, 'dtype', mask)!r}")
    if mask.shape != weight.shape:
        raise ValueError(
            f"layer {name!r}: mask shape {tuple(mask.shape)} does not match weight {tuple(weight.shape)}"
        )
