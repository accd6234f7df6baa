"""The fixed-width kernels under TRITON_INTERPRET=1 (tests/conftest.py) against the reference,
on fresh random inputs, with outputs poisoned with NaN before every launch."""

import numpy as np
import pytest
import torch

from compress import CompressedMatrix
from dc_kernels.checks import triton_at_least
from dc_kernels.fixed import Dispatch, GpuLayout, decode_dense, fixed_linear
from dc_kernels.fixed import launch as fixed_launch
from dc_kernels.fixed.launch import DEFAULT_DISPATCH, REGISTER_BUDGET_8BIT_ENTRIES_BATCH_1, register_budget
from dc_kernels.reference import CanonicalTensors
from dc_kernels.reference import decode_dense as reference_dense
from tests.helpers import DTYPES, assert_matches_reference, fresh_seed, random_input
from workloads import random_compressed_matrix


def run_and_check(
    matrix, batch, dtype, *, bias=True, strided=False, strided_out=False, dispatch=DEFAULT_DISPATCH, **shape
):
    """``shape``: `GpuLayout.from_matrix` keywords (index_bits, block_rows, chunks, lead)."""
    layout = GpuLayout.from_matrix(matrix, **shape)
    seed = fresh_seed()
    x = random_input(batch, matrix.shape[1], dtype, strided, seed)
    b = torch.randn(matrix.shape[0], generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    if strided_out:
        out = torch.full((2 * matrix.shape[0], batch), float("nan"), dtype=dtype).T[:, ::2]
    else:
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
    run_and_check(matrix, 3, dtype, block_rows=min(32, 1 << (shape[0] - 1).bit_length()))


def test_large_odd_shape():
    matrix = random_compressed_matrix(100, 4097, 0.004, 5, seed=fresh_seed())
    run_and_check(matrix, 2, torch.float16, block_rows=32, chunks=2)


@pytest.mark.parametrize("bits", range(1, 9))
def test_code_widths(bits):
    # Index widths cycle so that entries of 2..16 bits, crossing words and group halves or not, occur.
    matrix = random_compressed_matrix(21, 70, 0.15, bits, seed=fresh_seed())
    run_and_check(matrix, 1, torch.float32, index_bits=(bits * 3) % 8 + 1, block_rows=8, chunks=4)


@pytest.mark.parametrize("index_bits", range(1, 9))
def test_index_widths(index_bits):
    matrix = random_compressed_matrix(12, 200, 0.1, 3, seed=fresh_seed())
    run_and_check(matrix, 2, torch.float16, index_bits=index_bits, block_rows=4, chunks=8)


@pytest.mark.parametrize("batch", range(1, 18))
def test_batches(batch):
    matrix = random_compressed_matrix(10, 33, 0.25, 3, seed=fresh_seed())
    dtype = DTYPES[batch % 3]
    run_and_check(
        matrix,
        batch,
        dtype,
        bias=batch % 2 == 0,
        strided=batch % 4 == 1,
        strided_out=batch % 3 == 2,
        block_rows=16,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_input_and_output(dtype):
    matrix = random_compressed_matrix(13, 29, 0.3, 4, seed=fresh_seed())
    for batch in (1, 5):
        run_and_check(matrix, batch, dtype, strided=True, strided_out=True, block_rows=2, chunks=16)


@pytest.mark.parametrize(("block_rows", "chunks"), [(1, 32), (32, 1), (8, 4), (4, 16), (32, 4)])
def test_lane_shapes_long_rows_and_fillers(block_rows, chunks):
    # One-bit indices (3-bit codes: the narrowest entries): a filler per skipped column; rows of
    # very different lengths; chunks and their start columns; no waits (lead past the row) and
    # the tightest schedule (lead 0).
    mask = np.tril(np.ones((12, 50), dtype=bool), k=30)
    mask[::3] = False
    rng = np.random.default_rng(fresh_seed())
    codes = rng.integers(0, 8, size=mask.shape)
    matrix = CompressedMatrix.from_dense(mask, codes, rng.normal(size=8).astype(np.float32), 3)
    for lead in (0, 10**6):
        run_and_check(matrix, 2, torch.float32, index_bits=1, block_rows=block_rows, chunks=chunks, lead=lead)


def test_gather_and_global_codebook_lookup_agree():
    for bits in (4, 6):
        matrix = random_compressed_matrix(11, 40, 0.3, bits, seed=fresh_seed())
        for gather in (None, False, True):
            run_and_check(matrix, 4, torch.float32, dispatch=Dispatch(gather=gather), block_rows=16)


def test_register_budget_only_for_8_bit_entries_at_batch_1():
    budget = {"maxnreg": REGISTER_BUDGET_8BIT_ENTRIES_BATCH_1}
    if not triton_at_least(fixed_launch.REGISTER_BUDGET_MIN_TRITON):
        budget = {}  # older releases' ptxas choose without a budget
    assert all(register_budget(c, 8 - c, 1) == budget for c in range(1, 8))
    assert register_budget(4, 4, 2) == register_budget(5, 6, 1) == register_budget(1, 3, 1) == {}
    # The interpreter ignores the budget: a batch-1 launch of 4+4-bit entries still matches.
    run_and_check(random_compressed_matrix(9, 70, 0.4, 4, seed=fresh_seed()), 1, torch.float16, index_bits=4)


def test_dense_path_at_crossover():
    matrix = random_compressed_matrix(19, 45, 0.2, 5, seed=fresh_seed())
    for dtype in DTYPES:
        dispatch = Dispatch(dense_crossover_batch=8)
        run_and_check(matrix, 9, dtype, strided=dtype == torch.float16, dispatch=dispatch, block_rows=32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_dense(dtype):
    matrix = random_compressed_matrix(23, 37, 0.2, 7, seed=fresh_seed())
    layout = GpuLayout.from_matrix(matrix, block_rows=8, chunks=4)
    # float32 and float16 hold the codebook's rounding exactly as torch does; Triton's interpreter
    # rounds float32 -> bfloat16 toward zero (GPUs round to nearest), hence one ulp of slack.
    rtol = 2**-7 if dtype == torch.bfloat16 else 0.0
    expected = reference_dense(CanonicalTensors.from_matrix(matrix)).to(dtype)
    torch.testing.assert_close(decode_dense(layout, dtype), expected, rtol=rtol, atol=0)


def test_corrupt_stream_stays_in_bounds():
    """Unvalidated corrupt words (from_state does not read values) decode to columns past the
    row: the kernels neither load nor store there (the interpreter raises on any access out of
    bounds), and every output is still written."""
    matrix = random_compressed_matrix(32, 64, 0.3, 4, seed=fresh_seed())
    layout = GpuLayout.from_matrix(matrix, block_rows=32, chunks=2)
    words = torch.full_like(layout.words, 0x7FFF7FFF)  # huge steps everywhere
    corrupt = GpuLayout.from_state({**layout.tensors(), "words": words}, layout.metadata())
    with pytest.raises(ValueError):
        corrupt.to_matrix()
    y = fixed_linear(torch.randn(3, 64), corrupt, torch.zeros(32))
    assert torch.isfinite(y).all()
    assert torch.isfinite(decode_dense(corrupt)).all()


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
    with pytest.raises(ValueError, match="path"):
        fixed_linear(torch.randn(2, 7), layout, path="fast")
    with pytest.raises(TypeError):
        fixed_linear(torch.randn(2, 7), layout.to_matrix())
