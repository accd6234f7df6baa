"""Weight sharing with trainable centroids (the paper's trained quantization).

:func:`share_weights` replaces a module's weight by a parametrization computing
``W = codebook[codes] * mask``. ``codebook`` is the only trainable tensor; ``codes`` and
``mask`` are fixed buffers. Autograd sums the gradient of every weight in a cluster into its
centroid (the paper's centroid update) while the assignments stay fixed, so the user's own
optimizer and loop fine-tune the centroids (build the optimizer after sharing).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.kmeans import kmeans_1d
from compress.matrix import CompressedMatrix, check_bits
from compress.pruning import check_weight


class SharedWeight(nn.Module):
    """Parametrization ``W = codebook[codes] * mask`` (the module's own weight is ignored)."""

    def __init__(self, codebook: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.codebook = nn.Parameter(codebook.detach().clone().to(torch.float32))
        self.register_buffer("codes", codes.to(torch.int64))
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        shared = self.codebook[self.codes] * self.mask
        return shared.to(original.dtype)

    def matrix(self) -> CompressedMatrix:
        """The current layer in canonical form (conv weights flattened per output channel)."""
        rows = self.mask.shape[0]
        mask = self.mask.reshape(rows, -1).cpu().numpy()
        codes = self.codes.reshape(rows, -1).cpu().numpy().astype(np.uint8)
        codebook = self.codebook.detach().cpu().numpy()
        return CompressedMatrix.from_dense(mask, codes, codebook, self.bits)


def share_weights(
    module: nn.Module,
    mask: torch.Tensor,
    bits: int,
    *,
    init: str = "linear",
    seed: int = 0,
    name: str = "weight",
) -> SharedWeight:
    """Cluster the kept weights of ``module.weight`` (k-means, ``2**bits`` centroids) and
    parametrize the weight by the shared values; returns the parametrization, whose
    ``codebook`` parameter is now part of ``module.parameters()``. ``name`` names the layer in
    errors."""
    weight = module.weight
    check_weight(weight, name)
    if mask.shape != weight.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"layer {name!r}: mask must be a bool tensor of shape {tuple(weight.shape)}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    kept = mask.cpu()
    values = weight.detach().cpu().to(torch.float32)[kept].numpy()
    shared = kmeans_1d(values, bits, init=init, seed=seed, name=name)
    codes = torch.zeros(weight.shape, dtype=torch.int64)
    codes[kept] = torch.from_numpy(shared.codes.astype(np.int64))
    device = weight.device
    parametrization = SharedWeight(
        torch.from_numpy(shared.codebook).to(device), codes.to(device), mask.to(device), bits
    )
    parametrize.register_parametrization(module, "weight", parametrization)
    # The dense original no longer takes part in the forward pass: keep it out of training.
    module.parametrizations.weight.original.requires_grad_(False)
    return parametrization


def shared_weight(module: nn.Module) -> SharedWeight | None:
    """The module's :class:`SharedWeight` parametrization, or None if it has none."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = [p for p in module.parametrizations.weight if isinstance(p, SharedWeight)]
    return found[0] if found else None


def unshare(module: nn.Module) -> None:
    """Remove the parametrization, leaving the decoded shared weights as a plain parameter."""
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
