"""Helpers shared by the tests: Hypothesis strategies for compressed layers, fresh seeds, and the
check of a kernel's output against the one oracle (`dc_kernels.reference`)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from compress import CompressedMatrix
from dc_kernels.reference import CanonicalTensors, reference_linear
from workloads import random_compressed_matrix

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# (rtol, atol) of a kernel's float32-accumulated result against the float64 reference, by dtype;
# atol scales with the largest output.
TOL = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 2e-3), torch.bfloat16: (2e-2, 1e-2)}
_seed = np.random.SeedSequence()


def fresh_seed() -> int:
    """A new random seed per call (kernels see fresh inputs every run; failures print it)."""
    return int(_seed.spawn(1)[0].generate_state(1)[0])


@st.composite
def compressed_matrices(draw, max_rows: int = 40, max_cols: int = 300, densities=None) -> CompressedMatrix:
    """Random compressed layers: any code width, codebooks of 1..2**bits entries, densities that
    give empty and full layers and long gaps (``densities`` overrides the choices)."""
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    bits = draw(st.integers(1, 8))
    density = draw(st.sampled_from(densities or [0.0, 0.01, 0.05, 0.3, 0.9, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    mask = rng.random(rows * cols) < density
    k = draw(st.integers(1, 2**bits))
    codes = rng.integers(0, k, size=rows * cols).astype(np.uint8)
    codebook = rng.normal(size=k).astype(np.float32)
    return CompressedMatrix.from_dense(mask.reshape(rows, cols), codes.reshape(rows, cols), codebook, bits)


@st.composite
def random_layers(
    draw, max_rows: int = 40, max_cols: int = 300, min_density: float = 0.001
) -> CompressedMatrix:
    """`workloads.random_compressed_matrix` layers: any shape up to the bounds, any density
    from ``min_density`` (at least one kept weight), any code width."""
    return random_compressed_matrix(
        draw(st.integers(1, max_rows)),
        draw(st.integers(1, max_cols)),
        draw(st.floats(min_density, 1.0)),
        draw(st.integers(1, 8)),
        seed=draw(st.integers(0, 2**16)),
    )


def random_input(batch: int, in_features: int, dtype: torch.dtype, strided: bool, seed: int) -> torch.Tensor:
    """x (batch, in_features) in ``dtype``; ``strided``: a transposed, column-sliced view (no
    stride is 1)."""
    gen = torch.Generator().manual_seed(seed)
    if strided:
        return torch.randn(2 * in_features, batch, generator=gen).to(dtype).T[:, ::2]
    return torch.randn(batch, in_features, generator=gen).to(dtype)


def assert_matches_reference(
    y: torch.Tensor, x: torch.Tensor, matrix: CompressedMatrix, bias: torch.Tensor | None
) -> None:
    """``y`` equals x W^T + b of ``matrix`` (the float64 reference rounded to x's dtype) within
    the dtype's tolerance."""
    expected = reference_linear(x, CanonicalTensors.from_matrix(matrix), bias, torch.float64)
    assert y.dtype == x.dtype and y.shape == expected.shape
    rtol, atol = TOL[x.dtype]
    scale = 1 + float(expected.float().abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(y.float(), expected.float(), rtol=rtol, atol=atol * scale)
