"""One layer's one-shot compression as its :class:`~compress.LayerConfig` says, from its weight
and the Hessian ``H = X^T X`` of its calibration inputs (see :mod:`compress.obs`).

Pruning keeps the same number of weights whatever the method: ``max(1, round(density * n))``,
or with ``quality`` set as many as the paper's rule ``|w| > quality * std`` keeps. Magnitude
pruning with k-means gives exactly the layer :func:`compress.compress_matrix` gives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from compress.config import LayerConfig
from compress.matrix import CompressedMatrix
from compress.obs import (
    check_hessian,
    damped,
    inverse_hessian_factor,
    kept_count,
    obs_prune,
    obs_quantize,
    output_error,
    refit_codebook,
    wanda_mask,
)
from compress.one_shot import reserves_zero_code, share_matrix
from compress.pruning import check_weight, magnitude_mask, threshold_mask

# Settings that need the layer's calibration inputs.
CALIBRATED = {"pruning": ("wanda", "obs"), "quantization": ("weighted-kmeans", "obs")}


@dataclass(frozen=True)
class CalibratedLayer:
    """A compressed layer and how well it reproduces the layer's outputs on the calibration
    inputs: ``error_pruned`` after pruning alone, ``error`` after pruning and weight sharing
    (both ``||X W^T - X W'^T|| / ||X W^T||``), and the Hessian damping used."""

    matrix: CompressedMatrix
    error_pruned: float
    error: float
    damping: float


def needs_calibration(settings: LayerConfig) -> list[str]:
    """The settings of ``settings`` that need calibration inputs, as ``key='value'`` strings."""
    chosen = {key: getattr(settings, key) for key in CALIBRATED}
    return [f"{key}={value!r}" for key, value in chosen.items() if value in CALIBRATED[key]]


def compress_calibrated_layer(
    weight: torch.Tensor, hessian: torch.Tensor, settings: LayerConfig, *, seed: int = 0, name: str = "weight"
) -> CalibratedLayer:
    """Prune and share ``weight`` (2-D, or 4-D conv flattened per output channel) as
    ``settings`` says, minimizing the output error on the inputs behind ``hessian``
    (in_features x in_features, in the flattened weight's column order)."""
    if not isinstance(settings, LayerConfig):
        raise TypeError(f"layer {name!r}: settings must be a LayerConfig, got {type(settings).__name__}")
    matrix = check_weight(torch.as_tensor(weight).detach(), name).to(torch.float32)
    hessian = check_hessian(hessian, matrix.shape[1], name).to(matrix.device)
    if "obs" not in (settings.pruning, settings.quantization):
        return _compress(matrix, hessian, None, settings.damping, settings, seed, name, None)
    # The sweeps take the columns in order of decreasing input energy (GPTQ's "act order"): the
    # weights that matter most are decided first, while the most later columns can absorb
    # their errors. On all-MiniLM-L6-v2 this raised the mean cosine of obs+obs at density 0.5
    # and 4 bits from 0.8915 to 0.8952 (perf/bench_oneshot.py).
    order = torch.argsort(hessian.diagonal(), descending=True, stable=True)
    hessian = hessian[order][:, order]
    factor, damping = inverse_hessian_factor(hessian, settings.damping, name)
    inverse = torch.argsort(order).cpu().numpy()
    layer = _compress(matrix[:, order], hessian, factor, damping, settings, seed, name, inverse)
    permuted = layer.matrix
    matrix = CompressedMatrix.from_dense(
        permuted.mask()[:, inverse], permuted.dense_codes()[:, inverse], permuted.codebook, permuted.bits
    )
    return dataclasses.replace(layer, matrix=matrix)


def _compress(matrix, hessian, factor, damping: float, settings: LayerConfig, seed: int, name: str, inverse):
    """The layer compressed with its columns in the order given (``inverse``: back to the
    layer's own order, or None when it is that already)."""
    regularized = damped(hessian, damping, name)
    mask, pruned = _prune(matrix, hessian, factor, settings, name)
    # "obs" quantization starts from the weighted k-means codebook: on the benchmark, the mean
    # cosine of obs+obs rose from 0.960 to 0.966 (density 0.7) and 0.904 to 0.912 (0.5, 4 bits)
    # over starting from the plain k-means codebook.
    sensitivity = regularized.diagonal()[None, :] if settings.quantization != "kmeans" else None
    # The form is decided on the layer's own column order, as the module decides it later.
    own_order = mask if inverse is None else mask[:, inverse]
    compressed = share_matrix(
        pruned, mask, settings.bits, init=settings.init, seed=seed, weights=sensitivity, name=name,
        reserve_zero=reserves_zero_code(own_order, settings.bits, settings.form),
    )  # fmt: skip
    if settings.quantization == "obs":
        compressed = _obs_quantization(matrix, mask, regularized, factor, compressed.codebook, settings)
    decoded = compressed.to_dense_tensor(device=matrix.device)
    return CalibratedLayer(
        compressed, output_error(matrix, pruned, hessian), output_error(matrix, decoded, hessian), damping
    )


def _prune(matrix, hessian, factor, settings: LayerConfig, name: str):
    """(keep-mask, pruned weight): OBS also updates the kept weights."""
    if settings.quality is not None:
        mask = threshold_mask(matrix, settings.quality, name=name)
        count = int(torch.count_nonzero(mask))
    elif settings.pruning == "magnitude":
        mask = magnitude_mask(matrix, settings.density, name=name)
    else:
        count = kept_count(matrix.numel(), settings.density)
    if settings.pruning == "wanda":
        mask = wanda_mask(matrix, hessian.diagonal(), count)
    elif settings.pruning == "obs":
        pruned, mask = obs_prune(matrix, factor, count, settings.block_size)
        return mask, pruned
    return mask, matrix * mask


def _obs_quantization(matrix, mask, regularized, factor, codebook, settings: LayerConfig) -> CompressedMatrix:
    """Error-compensated rounding of the original weights to ``codebook`` (pruned ones to zero),
    then a codebook refit; unused entries dropped. (A second rounding to the refitted codebook
    and refit raised the cosine of the benchmark by less than 0.001 for another sweep's time.)"""
    codebook = torch.tensor(codebook, device=matrix.device)
    codes = obs_quantize(matrix, factor, mask, codebook, settings.block_size)
    refit = refit_codebook(matrix, regularized, mask, codes, codebook)
    if bool(torch.isfinite(refit).all()):  # float32 overflow on wild Hessians: keep the k-means codebook
        codebook = refit
    used = torch.zeros(codebook.numel(), dtype=torch.bool, device=codes.device)
    used[codes[mask]] = True
    renumber = torch.cumsum(used, 0) - 1
    return CompressedMatrix.from_dense(
        mask.cpu().numpy(),
        renumber[codes].clamp_min(0).to(torch.uint8).cpu().numpy(),
        codebook[used].cpu().numpy().astype(np.float32),
        settings.bits,
    )
