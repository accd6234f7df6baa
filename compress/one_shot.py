"""One-shot Deep Compression of one weight tensor: prune by magnitude, then share weights.

No retraining (use :class:`compress.Compressor` for that); for users, tests and the model API.
"""

from __future__ import annotations

import numpy as np
import torch

from compress.config import FORMS, LayerConfig
from compress.errors import ConfigError
from compress.kmeans import kmeans_1d
from compress.matrix import CompressedMatrix, check_bits
from compress.pruning import check_weight, magnitude_mask, threshold_mask
from compress.size import form_bits, pick_form


def compress_matrix(
    weight,
    density: float | None = None,
    bits: int = 5,
    init: str = "linear",
    seed: int = 0,
    *,
    quality: float | None = None,
    name: str = "weight",
    form: str = "sparse",
) -> CompressedMatrix:
    """Prune ``weight`` and share its kept weights with 1-D k-means.

    ``weight``: a 2-D (out_features, in_features) or 4-D conv tensor/array (output channels
    flattened). Prune to ``density`` (share kept, in (0, 1]) or by the paper's rule
    ``|w| > quality * std``; give at most one of them (neither keeps every weight). ``bits``
    (1..8) is the code width: the codebook has at most ``2**bits`` entries, ``2**bits - 1`` when
    the layer is for the dense-codes form (``form``, see `reserves_zero_code`). ``init`` and
    ``seed`` go to :func:`compress.kmeans.kmeans_1d`. ``name`` names the layer in errors.
    """
    if density is not None and quality is not None:
        raise ConfigError(f"layer {name!r}: give density or quality, not both ({density=}, {quality=})")
    bits = check_bits(bits)
    tensor = torch.as_tensor(weight).detach().cpu()
    matrix = check_weight(tensor, name).to(torch.float32)
    if quality is not None:
        mask = threshold_mask(matrix, quality, name=name)
    else:
        mask = magnitude_mask(matrix, 1.0 if density is None else density, name=name)
    zero = reserves_zero_code(mask, bits, form)
    return share_matrix(matrix, mask, bits, init=init, seed=seed, name=name, reserve_zero=zero)


def reserves_zero_code(mask, bits: int, form: str) -> bool:
    """Whether a layer pruned to ``mask`` keeps one of its ``2**bits`` codes for the zero weight
    (shares its kept weights among ``2**bits - 1`` values): when it is for the dense-codes form,
    forced (``form="dense_codes"``) or chosen by ``"auto"`` because dense codes of ``bits`` bits
    take fewer bits in memory than the sparse form (`compress.size.form_bits`)."""
    if form not in FORMS:
        raise ConfigError(f"form must be one of {FORMS}, got {form!r}")
    if form != "auto":
        return form == "dense_codes"
    mask_np = np.asarray(torch.as_tensor(mask).detach().cpu().numpy(), dtype=bool)
    rows, cols = np.nonzero(mask_np)
    row_ptr = np.zeros(mask_np.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=mask_np.shape[0]), out=row_ptr[1:])
    return pick_form(form_bits(mask_np.shape, row_ptr, cols, bits, (1 << bits) - 1)) == "dense_codes"


def compress_as_configured(
    weight, settings: LayerConfig, *, seed: int = 0, name: str = "weight"
) -> CompressedMatrix:
    """:func:`compress_matrix` with a layer's resolved settings (density or quality, bits, init)."""
    density = settings.density if settings.quality is None else None
    return compress_matrix(
        weight, density, settings.bits, settings.init, seed, quality=settings.quality, name=name,
        form=settings.form,
    )  # fmt: skip


def share_matrix(
    weight,
    mask,
    bits: int,
    *,
    init: str = "linear",
    seed: int = 0,
    weights=None,
    name: str = "weight",
    reserve_zero: bool = False,
) -> CompressedMatrix:
    """Share the weights kept by ``mask`` (k-means) without pruning: a 2-D weight and mask
    (tensors or arrays) to a :class:`CompressedMatrix` of exactly that mask. ``weights`` (an
    array broadcasting to the weight's shape, e.g. one per input column) weighs each kept weight
    in the k-means (see ``kmeans_1d``). ``reserve_zero`` leaves one code of ``2**bits`` free for
    the dense-codes form's zero (`reserves_zero_code`)."""
    weight_np = np.asarray(torch.as_tensor(weight).detach().cpu().to(torch.float32).numpy())
    mask_np = np.asarray(torch.as_tensor(mask).detach().cpu().numpy(), dtype=bool)
    if weight_np.ndim != 2 or mask_np.shape != weight_np.shape:
        raise ValueError(
            f"layer {name!r}: need a 2-D weight and a mask of its shape, "
            f"got {weight_np.shape} and {mask_np.shape}"
        )
    if weights is not None:
        weights = np.asarray(torch.as_tensor(weights).detach().cpu().numpy(), dtype=np.float64)
        try:
            weights = np.broadcast_to(weights, mask_np.shape)[mask_np]
        except ValueError as exc:
            raise ValueError(
                f"layer {name!r}: k-means weights of shape {weights.shape} do not fit the weight "
                f"{mask_np.shape}"
            ) from exc
    clusters = max(1, (1 << bits) - 1) if reserve_zero else None
    shared = kmeans_1d(
        weight_np[mask_np], bits, init=init, seed=seed, weights=weights, name=name, clusters=clusters
    )
    codes = np.zeros(mask_np.shape, dtype=np.uint8)
    codes[mask_np] = shared.codes
    return CompressedMatrix.from_dense(mask_np, codes, shared.codebook, bits)
