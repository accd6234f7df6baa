"""`workloads.random_compressed_matrix`: exact density, determinism, valid CSR, bad arguments."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads import random_compressed_matrix


def test_random_layer_exact_density_and_determinism():
    a = random_compressed_matrix(100, 300, 0.09, 5, seed=3)
    b = random_compressed_matrix(100, 300, 0.09, 5, seed=3)
    assert a.equals(b)
    assert a.nnz == 2700
    assert not a.equals(random_compressed_matrix(100, 300, 0.09, 5, seed=4))
    with pytest.raises(ValueError, match="density"):
        random_compressed_matrix(3, 3, 0.0, 4)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    density=st.floats(1e-6, 1.0),
    bits=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_kept_weights_codes_and_codebook(rows, cols, density, bits, seed):
    """Every path (all kept, permutation, oversampling) keeps round(density * size) distinct
    positions, at least one, with codes inside a sorted codebook of 2**bits entries."""
    m = random_compressed_matrix(rows, cols, density, bits, seed=seed)
    assert m.nnz == min(rows * cols, max(1, round(density * rows * cols)))
    positions = m.row_idx.astype(np.int64) * cols + m.col_idx
    assert np.all(np.diff(positions) > 0)  # row-major order, no repeats
    assert m.codebook.size == 2**bits and np.all(np.diff(m.codebook) >= 0)
    assert m.codes.max() < 2**bits


def test_codebook_size():
    m = random_compressed_matrix(20, 20, 0.5, 4, seed=1, codebook_size=15)
    assert m.codebook.size == 15 and m.codes.max() <= 14
    assert random_compressed_matrix(5, 5, 1.0, 3, codebook_size=1).codes.max() == 0


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, 4, 0.5, 4), {}, r"shape must be positive, got \(0, 4\)"),
        ((4, -1, 0.5, 4), {}, r"shape must be positive, got \(4, -1\)"),
        ((4, 4, 1.5, 4), {}, r"density must be in \(0, 1\], got 1.5"),
        ((4, 4, 0.5, 0), {}, "bits must be in 1..8, got 0"),
        ((4, 4, 0.5, 2), {"codebook_size": 5}, "codebook_size must be in 1..4, got 5"),
        ((4, 4, 0.5, 2), {"codebook_size": 0}, "codebook_size must be in 1..4, got 0"),
    ],
)
def test_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_compressed_matrix(*args, **kwargs)
