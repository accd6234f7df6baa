"""The dense-codes Triton kernels under TRITON_INTERPRET=1 (tests/conftest.py) against the
reference, on fresh random inputs, with outputs poisoned with NaN before every launch; and the
layout's round trip, its sizes and the launcher's argument checks."""

import numpy as np
import pytest
import torch

from dc_kernels import CompressedLinear
from dc_kernels.dense_codes import DenseCodesLayout, Dispatch, dense_codes_linear
from dc_kernels.dense_codes.launch import (
    BATCH_BUCKETS,
    DEFAULT_DISPATCH,
    TileConfig,
    aot_configs,
    decode_dense,
    loop_items,
)
from tests.helpers import DTYPES, assert_matches_reference, fresh_seed, random_input
from workloads import random_compressed_matrix


def run_and_check(matrix, batch, dtype, *, bias=True, strided=False, path=None, dispatch=DEFAULT_DISPATCH):
    layout = DenseCodesLayout.from_matrix(matrix)
    seed = fresh_seed()
    x = random_input(batch, matrix.shape[1], dtype, strided, seed)
    b = torch.randn(matrix.shape[0], generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    out = torch.full((batch, matrix.shape[0]), float("nan"), dtype=dtype)
    y = dense_codes_linear(x, layout, b, out=out, path=path, dispatch=dispatch)
    assert y is out
    assert_matches_reference(y, x, matrix, b)


@pytest.mark.parametrize(
    ("shape", "density", "bits", "k"),
    [((1, 1), 1.0, 1, None), ((7, 13), 0.3, 3, 7), ((1, 300), 0.6, 4, 15), ((33, 70), 0.8, 5, None),
     ((9, 40), 1.0, 8, 200), ((17, 60), 1e-9, 2, None)],
)  # fmt: skip
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_code_width_and_dtype(shape, density, bits, k, dtype):
    extra = {} if k is None else {"codebook_size": k}
    matrix = random_compressed_matrix(*shape, density, bits, seed=fresh_seed(), **extra)
    for path in (None, "codes"):  # decode + cuBLAS as dispatched at batch 3, and the tile kernel
        run_and_check(matrix, 3, dtype, path=path)


@pytest.mark.parametrize("bits", range(1, 10))
def test_tile_kernel_every_width(bits):
    """The tile kernel (batch 2..16) on every plane combination, rows of several loop steps and a
    partial group, every bucket."""
    extra = {"codebook_size": (1 << bits) - 1 or 1} if bits < 9 else {}
    matrix = random_compressed_matrix(11, 301, 0.6, min(bits, 8), seed=fresh_seed(), **extra)
    for i, batch in enumerate((2, 4, 7, 16)):
        run_and_check(matrix, batch, DTYPES[i % len(DTYPES)], strided=i % 2 == 1, path="codes")


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("full_codebook", [False, True])
def test_gemv_every_width_and_the_unmasked_loop(bits, full_codebook):
    """Batch 1 (the GEMV kernel) and the decoder: widths 1..9 (a full codebook takes one bit
    more), rows long enough for their unmasked loop (1037 columns: 64 whole groups, two loop
    steps, then a partial group; 700: one step, 11 whole groups and a partial one after it),
    short rows, strided x, three dtypes."""
    extra = {} if full_codebook else {"codebook_size": (1 << bits) - 1 or 1}
    for i, (shape, density) in enumerate([((6, 1037), 0.7), ((5, 700), 0.5), ((3, 13), 1.0), ((1, 16), 0.3)]):
        matrix = random_compressed_matrix(*shape, density, bits, seed=fresh_seed(), **extra)
        run_and_check(matrix, 1, DTYPES[i % len(DTYPES)], strided=i % 2 == 1, bias=i != 2)
        # The decoder walks the groups the same way (its loop, then the last groups' step); exact
        # in float32 and float16 (Triton's interpreter rounds to bfloat16 differently from torch).
        dense = torch.from_numpy(matrix.to_dense())
        dtype = (torch.float32, torch.float16)[i % 2]
        assert torch.equal(decode_dense(DenseCodesLayout.from_matrix(matrix), dtype), dense.to(dtype))


@pytest.mark.parametrize("batch", [1, 2, 5, 16, 17, 40])
def test_batch_buckets_chunks_and_both_paths(batch):
    matrix = random_compressed_matrix(24, 50, 0.7, 4, seed=fresh_seed(), codebook_size=15)
    for path in (None, "codes", "dense"):
        run_and_check(matrix, batch, torch.float32, strided=batch % 2 == 1, bias=batch != 5, path=path)
    run_and_check(matrix, batch, torch.float16, dispatch=Dispatch(dense_crossover_batch=2))


def test_decode_is_exact_and_the_layout_round_trips():
    matrix = random_compressed_matrix(19, 45, 0.6, 4, seed=fresh_seed(), codebook_size=15)
    layout = DenseCodesLayout.from_matrix(matrix)
    assert torch.equal(decode_dense(layout), torch.from_numpy(matrix.to_dense()))
    assert np.array_equal(layout.to_matrix().to_dense(), matrix.to_dense())
    assert layout.total_bytes() * 8 <= 19 * 45 * 4 + 64 * 8 * 19  # 4 bits a weight plus row padding


def test_module_runs_the_form_on_the_interpreter():
    matrix = random_compressed_matrix(12, 30, 0.8, 4, seed=fresh_seed(), codebook_size=15)
    layer = CompressedLinear.from_matrix(matrix, backend="dense_codes", form="dense_codes")
    x = torch.randn(4, 30)
    assert_matches_reference(layer(x), x, matrix, None)
    assert torch.equal(layer.weight, torch.from_numpy(matrix.to_dense()))


def test_dispatch_tiles_are_checked():
    with pytest.raises(ValueError, match="multiple of 16"):
        Dispatch(gemm={bb: TileConfig(16, 24, 4) for bb in (2, 4, 8, 16)})
    with pytest.raises(ValueError, match="multiple of 16"):
        Dispatch(gemv=TileConfig(4, 8, 4))
    with pytest.raises(ValueError, match=r"missing \[16\]"):
        Dispatch(gemm={bb: TileConfig(16, 64, 4) for bb in (2, 4, 8)})


def test_launcher_arguments_are_checked():
    layout = DenseCodesLayout.from_matrix(random_compressed_matrix(6, 10, 0.5, 3, seed=1, codebook_size=7))
    with pytest.raises(ValueError, match="path must be"):
        dense_codes_linear(torch.randn(2, 10), layout, path="sparse")
    with pytest.raises(Exception, match="10"):
        dense_codes_linear(torch.randn(2, 9), layout)
    with pytest.raises(TypeError, match="DenseCodesLayout"):
        decode_dense(object())


def test_aot_configs_cover_every_bucket_and_width():
    configs = aot_configs({"float16": "fp16"}, (1, 4, 8))
    gemm = [c for c in configs if c[4] != 0]
    assert len(gemm) == 3 * len(BATCH_BUCKETS) and len(configs) == 3 * (len(BATCH_BUCKETS) + 1)
    for kernel, consts, warps, _, bb in configs:
        if kernel.__name__ in ("dense_codes_gemv_kernel", "dense_codes_decode_kernel"):  # 16 codes a thread
            assert bb in (0, 1) and loop_items(consts) == consts["R"] * consts["G"] * 16 == 32 * warps * 16
        else:
            assert bb != 1 and loop_items(consts) == consts["BLOCK_N"] * consts["BLOCK_K"]
