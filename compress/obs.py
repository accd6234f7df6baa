"""Calibration-aware compression of one layer from its input Hessian.

With the layer's calibration inputs stacked as the rows of X, ``H = X^T X`` (in_features^2), and
a change D of the weight W (out_features x in_features) changes the layer's outputs by
``||X D^T||^2 = tr(D H D^T)``. Everything here minimizes that, one layer at a time:

* :func:`wanda_mask`: keep, per output row, the weights of largest ``|w_ij| * ||X_j||``
  (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models").
* :func:`obs_prune`: the optimal brain surgeon, column by column, updating the kept weights
  to absorb each pruned weight's error through ``H^-1`` (SparseGPT: Frantar and Alistarh 2023,
  "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot"), with the mask
  chosen per block of columns from the OBS saliency ``w^2 / [H^-1]_jj``.
* :func:`obs_quantize`: the same sweep rounding each kept weight to its nearest codebook
  entry and pruned ones to zero (GPTQ: Frantar et al. 2023, "GPTQ: Accurate Post-Training
  Quantization for Generative Pre-trained Transformers", with a shared codebook instead of a
  uniform grid), then :func:`refit_codebook` solves for the codebook that minimizes the output
  error with the codes fixed.

The sweeps use the upper Cholesky factor of ``H^-1`` (:func:`inverse_hessian_factor`), whose
row j holds the updates that column j's error makes to the later columns, and GPTQ's lazy
batching: within a block of columns the updates are applied at once, then to the rest of the
matrix in one product.
"""

from __future__ import annotations

import logging

import torch

from compress.errors import ConfigError, SingularHessianError

logger = logging.getLogger(__name__)

# Damping shares tried after the configured one when a factorization fails (float32 round-off on
# a nearly singular H); the last resort factorizes in float64.
_FALLBACK_DAMPING = (1e-3, 1e-2, 1e-1)


def check_hessian(hessian: torch.Tensor, in_features: int, name: str = "weight") -> torch.Tensor:
    """``hessian`` as a finite, square float32 (in_features, in_features) tensor."""
    if not isinstance(hessian, torch.Tensor):
        raise TypeError(f"layer {name!r}: the Hessian must be a torch.Tensor, got {type(hessian).__name__}")
    if hessian.shape != (in_features, in_features):
        raise ValueError(
            f"layer {name!r}: the Hessian has shape {tuple(hessian.shape)}, the weight "
            f"{in_features} input features (need ({in_features}, {in_features}))"
        )
    hessian = hessian.to(torch.float32)
    if not bool(torch.isfinite(hessian).all()):
        raise SingularHessianError(
            f"layer {name!r}: the Hessian holds NaN or inf (from its calibration inputs)"
        )
    return hessian


def damped(hessian: torch.Tensor, damping: float, name: str = "weight") -> torch.Tensor:
    """``H + damping * mean(diag H) * I``; refuses an H whose diagonal is all zero (every
    calibration input of the layer was zero, so nothing can be told about its weights)."""
    scale = float(hessian.diagonal().mean())
    if scale < 0:
        raise SingularHessianError(
            f"layer {name!r}: the Hessian's diagonal has a negative mean ({scale}): not X^T X"
        )
    if not scale > 0:
        raise SingularHessianError(
            f"layer {name!r}: every calibration input of the layer is zero (the Hessian's diagonal "
            f"is {scale}); give inputs that reach it with data, or skip the layer"
        )
    out = hessian.clone()
    out.diagonal().add_(damping * scale)
    return out


def inverse_hessian_factor(hessian: torch.Tensor, damping: float, name: str = "weight") -> tuple:
    """(U, damping used): U is the upper Cholesky factor of ``(H + damping * mean(diag H) I)^-1``
    (so ``H^-1 = U^T U``). When the factorization fails, more damping is tried (each try
    logged), then float64; :class:`SingularHessianError` names the layer if all fail."""
    tries = [damping] + [d for d in _FALLBACK_DAMPING if d > damping]
    for attempt, share in enumerate(tries):
        for dtype in (torch.float32, torch.float64) if attempt == len(tries) - 1 else (torch.float32,):
            factor = _inverse_factor(damped(hessian, share, name).to(dtype))
            if factor is not None:
                if attempt:
                    logger.warning("layer %r: damping %g failed, %g used", name, damping, share)
                return factor.to(torch.float32), share
    raise SingularHessianError(
        f"layer {name!r}: the damped Hessian is not positive definite even with damping {tries[-1]} "
        "in float64 (calibration inputs of very different scales?)"
    )


def _inverse_factor(hessian: torch.Tensor) -> torch.Tensor | None:
    lower, info = torch.linalg.cholesky_ex(hessian)
    if int(info):
        return None
    upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
    if int(info) or not bool(torch.isfinite(upper).all()):
        return None
    return upper


def kept_count(numel: int, density: float) -> int:
    """Weights kept at ``density``, as magnitude pruning keeps them: ``max(1, round(density * numel))``."""
    return max(1, round(density * numel))


def wanda_mask(weight: torch.Tensor, hessian_diagonal: torch.Tensor, count: int) -> torch.Tensor:
    """Keep ``count`` weights, spread evenly over the output rows, with the largest
    ``|w_ij| * sqrt(H_jj)`` in their row (ties to the lower column)."""
    rows, cols = weight.shape
    score = weight.abs() * hessian_diagonal.clamp_min(0).sqrt()[None, :]
    order = torch.argsort(score, dim=1, descending=True, stable=True)
    # Row r keeps floor((r+1) count / rows) - floor(r count / rows): `count` in all.
    bounds = torch.arange(rows + 1, dtype=torch.int64) * count // rows
    per_row = (bounds[1:] - bounds[:-1]).to(weight.device)
    rank = torch.arange(cols, device=weight.device)[None, :]
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask.scatter_(1, order, rank < per_row[:, None])
    return mask


def obs_prune(
    weight: torch.Tensor, factor: torch.Tensor, count: int, block_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT: (pruned weight with the kept weights updated, mask) keeping ``count`` weights.

    ``factor`` is :func:`inverse_hessian_factor`'s U. Each block of ``block_size`` columns keeps
    its share of ``count`` (in proportion to its columns): the weights of largest OBS saliency
    ``w^2 / U_jj^2`` at the time the sweep reaches the block."""
    pruned, mask, _ = _sweep(weight, factor, block_size, count=count)
    return pruned, mask


def obs_quantize(
    weight: torch.Tensor,
    factor: torch.Tensor,
    mask: torch.Tensor,
    codebook: torch.Tensor,
    block_size: int = 128,
) -> torch.Tensor:
    """GPTQ with a codebook: the dense codes (int64, 0 where pruned) from rounding each weight
    ``mask`` keeps to its nearest entry of ``codebook`` (ties to the lower one) and the others to
    zero, column by column, each column's error spread over the later columns through ``H^-1``."""
    order = torch.argsort(codebook)
    _, _, codes = _sweep(weight, factor, block_size, mask=mask, codebook=codebook[order])
    return order[codes]


def _sweep(
    weight: torch.Tensor,
    factor: torch.Tensor,
    block_size: int,
    *,
    count: int | None = None,
    mask: torch.Tensor | None = None,
    codebook: torch.Tensor | None = None,
):
    """The OBS sweep of :func:`obs_prune` (``count`` given: choose the mask) or
    :func:`obs_quantize` (``mask`` and sorted ``codebook`` given); returns (weight, mask, codes)."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size must be an int >= 1, got {block_size!r}")
    # Transposed, so that a column of the weight is a contiguous row here.
    work = weight.to(torch.float32).t().contiguous()
    cols, rows = work.shape
    keep = torch.zeros_like(work, dtype=torch.bool) if mask is None else mask.t().contiguous()
    codes = None if codebook is None else torch.zeros(cols, rows, dtype=torch.int64, device=work.device)
    bounds = None if codebook is None else (codebook[1:] + codebook[:-1]) / 2
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = work[start:end].clone()
        inverse = factor[start:end, start:end]
        errors = torch.zeros_like(block)
        if mask is None:
            share = count * end // cols - count * start // cols
            saliency = block.square() / inverse.diagonal().square()[:, None]
            chosen = torch.zeros(saliency.numel(), dtype=torch.bool, device=work.device)
            # Column-major order of the weight: ties go to the lower row, then the lower column.
            chosen[torch.argsort(saliency.t().flatten(), descending=True, stable=True)[:share]] = True
            keep[start:end] = chosen.view(rows, -1).t()
        for j in range(end - start):
            column = block[j]
            kept = keep[start + j]
            if codebook is None:
                rounded = column * kept
            else:
                index = torch.searchsorted(bounds, column)
                codes[start + j] = index * kept
                rounded = codebook[index] * kept
            error = (column - rounded) / inverse[j, j]
            block[j:].sub_(inverse[j, j:, None] * error[None, :])
            block[j] = rounded
            errors[j] = error
        work[start:end] = block
        work[end:].sub_(factor[start:end, end:].t() @ errors)
    return work.t(), keep.t(), None if codes is None else codes.t()


def refit_codebook(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    mask: torch.Tensor,
    codes: torch.Tensor,
    codebook: torch.Tensor,
    *,
    iterations: int | None = None,
) -> torch.Tensor:
    """The codebook c minimizing ``tr((W - W_c) H (W - W_c)^T)`` for ``W_c = c[codes] * mask``
    with the codes fixed: the normal equations ``A c = b`` (A: k x k, positive semi-definite)
    solved by conjugate gradients from ``codebook``, one (rows x in x in) product per step and at
    most k steps (``iterations``). Entries no kept weight uses are left as they are."""
    k = codebook.numel()
    flat = codes[mask]

    def gather(matrix: torch.Tensor) -> torch.Tensor:  # sum of `matrix` over each code's positions
        return torch.zeros(k, dtype=torch.float64, device=matrix.device).index_add_(
            0, flat, matrix[mask].to(torch.float64)
        )

    def apply(values: torch.Tensor) -> torch.Tensor:  # A @ values
        return gather((values.to(torch.float32)[codes] * mask) @ hessian)

    used = gather(torch.ones_like(weight)) > 0
    solution = codebook.to(torch.float64).clone()
    residual = (gather(weight.to(torch.float32) @ hessian) - apply(solution)) * used
    direction = residual.clone()
    size = float(residual @ residual)
    tolerance = 1e-8 * max(size, 1e-300)
    for _ in range(k if iterations is None else iterations):
        if size <= tolerance:
            break
        product = apply(direction) * used
        curvature = float(direction @ product)
        if not curvature > 0:
            break
        step = size / curvature
        solution += step * direction
        residual -= step * product
        size, previous = float(residual @ residual), size
        direction = residual + (size / previous) * direction
    return solution.to(torch.float32)


def output_error(weight: torch.Tensor, approximation: torch.Tensor, hessian: torch.Tensor) -> float:
    """``||X W^T - X W'^T|| / ||X W^T||`` from ``H = X^T X`` (0 when both outputs are zero)."""
    reference = float(((weight @ hessian) * weight).sum())
    difference = weight - approximation
    error = float(((difference @ hessian) * difference).sum())
    if reference <= 0:
        return 0.0 if error <= 0 else float("inf")
    return max(error, 0.0) ** 0.5 / reference**0.5
