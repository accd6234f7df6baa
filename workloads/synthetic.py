"""Random compressed layers with a given shape, density and code width.

Used for the paper's benchmark layers (whose trained weights are not public), for benchmarks
and for tests. Deterministic for a seed and fast at VGG-6 size (100M positions).
"""

from __future__ import annotations

import numpy as np

from compress.matrix import CompressedMatrix, check_bits


def random_compressed_matrix(
    out_features: int,
    in_features: int,
    density: float,
    bits: int,
    seed: int = 0,
    *,
    codebook_size: int | None = None,
) -> CompressedMatrix:
    """A layer with exactly ``round(density * out * in)`` kept weights (at least one) at
    uniformly random positions, uniformly random codes, and a sorted codebook drawn from a
    normal distribution (like trained FC weights)."""
    bits, nnz, k = random_layer_size(out_features, in_features, density, bits, codebook_size)
    rng = np.random.default_rng(seed)
    total = out_features * in_features
    if nnz == total:
        flat = np.arange(total, dtype=np.int64)
    elif nnz * 4 > total:
        flat = np.sort(rng.permutation(total)[:nnz])
    else:
        # Oversample with replacement, deduplicate, then keep a random subset of exactly nnz.
        draw = sorted_unique(rng.integers(0, total, size=int(nnz * 1.2) + 16, dtype=np.int64))
        while draw.size < nnz:
            more = rng.integers(0, total, size=nnz - draw.size + 16, dtype=np.int64)
            draw = sorted_unique(np.concatenate((draw, more)))
        flat = np.sort(rng.choice(draw, size=nnz, replace=False))
    return layer_at_positions((out_features, in_features), flat, bits, k, rng)


def random_layer_size(
    out_features: int, in_features: int, density: float, bits: int, codebook_size: int | None
) -> tuple[int, int, int]:
    """The checked code width, the number of kept weights (``round(density * out * in)``, at
    least one) and the codebook size (default ``2**bits``) of a random layer."""
    bits = check_bits(bits)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if out_features < 1 or in_features < 1:
        raise ValueError(f"shape must be positive, got ({out_features}, {in_features})")
    total = out_features * in_features
    k = codebook_size if codebook_size is not None else 2**bits
    if not 1 <= k <= 2**bits:
        raise ValueError(f"codebook_size must be in 1..{2**bits}, got {k}")
    return bits, min(total, max(1, round(density * total))), k


def layer_at_positions(
    shape: tuple[int, int], flat: np.ndarray, bits: int, k: int, rng: np.random.Generator
) -> CompressedMatrix:
    """The layer whose kept weights sit at the ascending row-major positions ``flat``, with a
    sorted codebook of ``k`` normal weights and uniformly random codes drawn from ``rng``."""
    out_features, in_features = shape
    rows = flat // in_features
    cols = (flat % in_features).astype(np.int32)
    row_ptr = np.zeros(out_features + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=out_features), out=row_ptr[1:])
    codebook = np.sort(rng.normal(0.0, 0.05, size=k)).astype(np.float32)
    codes = rng.integers(0, k, size=flat.size, dtype=np.int64).astype(np.uint8)
    return CompressedMatrix(shape, codebook, row_ptr, cols, codes, bits)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values in ascending order (np.unique hashes large int arrays, several times
    slower than sorting)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))]
