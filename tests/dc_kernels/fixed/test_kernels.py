"""The fixed-width kernels under TRITON_INTERPRET=1 (tests/conftest.py) against the reference,
on fresh random inputs, with outputs poisoned with NaN before every launch."""

import numpy as np
import pytest
import torch

from compress import CompressedMatrix
from dc_kernels.fixed import Dispatch, GpuLayout, decode_dense, fixed_linear
from dc_kernels.fixed.launch import DEFAULT_DISPATCH
from dc_kernels.reference import CanonicalTensors
from dc_kernels.reference import decode_dense as reference_dense
from tests.helpers import DTYPES, assert_matches_reference, fresh_seed, random_input
from workloads import random_compressed_matrix


def run_and_check(
    matrix, batch, dtype, *, bias=True, strided=False, index_bits=None, slice_rows=4,
    dispatch=DEFAULT_DISPATCH,
):
    layout = GpuLayout.from_matrix(matrix, index_bits=index_bits, slice_rows=slice_rows)
    seed = fresh_seed()
    x = random_input(batch, matrix.shape[1], dtype, strided, seed)
    b = torch.randn(matrix.shape[0], generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    out = torch.full((batch, matrix.shape[0]), float("nan"), dtype=dtype)
    y = fixed_linear(x, layout, b, out=out, dispatch=dispatch)
    assert y is out
    assert_matches_reference(y, x, matrix, b)


@pytest.mark.parametrize(
    ("shape", "density"),
    [((1, 1), 1.0), ((7, 13), 0.3), ((1, 300), 0.2), ((300, 1), 0.5), ((9, 40), 1.0), ((17, 60), 1e-9)],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_odd_shapes_and_densities(shape, density, dtype):
    matrix = random_compressed_matrix(*shape, density, 4, seed=fresh_seed())
    run_and_check(matrix, 3, dtype)


def test_large_odd_shape():
    matrix = random_compressed_matrix(1000, 4097, 0.004, 5, seed=fresh_seed())
    run_and_check(matrix, 2, torch.float16, slice_rows=16)


@pytest.mark.parametrize("bits", range(1, 9))
def test_code_widths(bits):
    # Index widths cycle so that entries of 2..16 bits, straddling words or not, all occur.
    matrix = random_compressed_matrix(21, 70, 0.15, bits, seed=fresh_seed())
    run_and_check(matrix, 1, torch.float32, index_bits=(bits * 3) % 8 + 1)


@pytest.mark.parametrize("batch", range(1, 18))
def test_batches(batch):
    matrix = random_compressed_matrix(10, 33, 0.25, 3, seed=fresh_seed())
    dtype = DTYPES[batch % 3]
    run_and_check(matrix, batch, dtype, bias=batch % 2 == 0, strided=batch % 4 == 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input(dtype):
    matrix = random_compressed_matrix(13, 29, 0.3, 4, seed=fresh_seed())
    run_and_check(matrix, 5, dtype, strided=True, slice_rows=2)


def test_long_rows_fillers_and_slice_rows():
    # One-bit indices: a filler per skipped column; rows of very different lengths.
    mask = np.tril(np.ones((12, 50), dtype=bool), k=30)
    mask[::3] = False
    rng = np.random.default_rng(fresh_seed())
    codes = rng.integers(0, 4, size=mask.shape)
    matrix = CompressedMatrix.from_dense(mask, codes, rng.normal(size=4).astype(np.float32), 2)
    for slice_rows in (1, 8, 16):
        run_and_check(matrix, 2, torch.float32, index_bits=1, slice_rows=slice_rows)


def test_gather_and_global_codebook_lookup_agree():
    matrix = random_compressed_matrix(11, 40, 0.3, 6, seed=fresh_seed())
    for gather in (None, False):
        run_and_check(matrix, 4, torch.float32, dispatch=Dispatch(gather=gather))


def test_dense_path_at_crossover():
    matrix = random_compressed_matrix(19, 45, 0.2, 5, seed=fresh_seed())
    for dtype in DTYPES:
        dispatch = Dispatch(dense_crossover_batch=8)
        run_and_check(matrix, 9, dtype, strided=dtype == torch.float16, dispatch=dispatch)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_dense(dtype):
    matrix = random_compressed_matrix(23, 37, 0.2, 7, seed=fresh_seed())
    layout = GpuLayout.from_matrix(matrix)
    # float32 and float16 hold the codebook's rounding exactly as torch does; Triton's interpreter
    # rounds float32 -> bfloat16 toward zero (GPUs round to nearest), hence one ulp of slack.
    rtol = 2**-7 if dtype == torch.bfloat16 else 0.0
    expected = reference_dense(CanonicalTensors.from_matrix(matrix)).to(dtype)
    torch.testing.assert_close(decode_dense(layout, dtype), expected, rtol=rtol, atol=0)


def test_empty_batch_and_empty_layer():
    layout = GpuLayout.from_matrix(random_compressed_matrix(5, 7, 0.5, 2, seed=0))
    y = fixed_linear(torch.empty(0, 7, dtype=torch.float16), layout)
    assert y.shape == (0, 5) and y.dtype == torch.float16
    empty = CompressedMatrix((6, 4), np.ones(1, np.float32), np.zeros(7, np.int64), [], [], 1)
    bias = torch.randn(6)
    y = fixed_linear(torch.randn(2, 4), GpuLayout.from_matrix(empty), bias)
    assert torch.equal(y, bias.expand(2, 6))


def test_bad_inputs():
    layout = GpuLayout.from_matrix(random_compressed_matrix(5, 7, 0.5, 2, seed=0))
    with pytest.raises(ValueError, match="shape"):
        fixed_linear(torch.randn(2, 8), layout)
    with pytest.raises(TypeError, match="dtype"):
        fixed_linear(torch.randn(2, 7, dtype=torch.float64), layout)
    with pytest.raises(ValueError, match="bias"):
        fixed_linear(torch.randn(2, 7), layout, torch.randn(4))
    with pytest.raises(ValueError, match="out"):
        fixed_linear(torch.randn(2, 7), layout, out=torch.empty(2, 5, dtype=torch.float16))
    with pytest.raises(TypeError):
        fixed_linear(torch.randn(2, 7), layout.to_matrix())
