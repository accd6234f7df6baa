"""The Huffman kernels under TRITON_INTERPRET=1 (tests/conftest.py) against the references, on
fresh random inputs, with outputs poisoned with NaN before every launch."""

import dataclasses

import numpy as np
import pytest
import torch

from compress import CompressedMatrix
from dc_kernels.huffman import HuffmanLayout, huffman_decode, huffman_decode_dense, huffman_linear
from tests.helpers import assert_matches_reference, fresh_seed, random_input
from workloads import random_compressed_matrix


def check(matrix: CompressedMatrix, batch: int, dtype=torch.float32, bias=True, strided=False, **kwargs):
    layout = HuffmanLayout.from_matrix(matrix, **kwargs)
    seed = fresh_seed()
    x = random_input(batch, matrix.shape[1], dtype, strided, seed)
    b = torch.randn(matrix.shape[0], generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    for prefetch in (False, True):  # both variants of the fused kernel
        out = torch.full((batch, matrix.shape[0]), float("nan"), dtype=dtype)
        y = huffman_linear(x, layout, b, out=out, prefetch=prefetch)
        assert y is out
        assert_matches_reference(y, x, matrix, b)
    codes, cols = huffman_decode(layout)
    assert np.array_equal(codes.numpy(), matrix.codes) and np.array_equal(cols.numpy(), matrix.col_idx)
    assert np.array_equal(huffman_decode_dense(layout).numpy(), matrix.to_dense())
    with pytest.raises(ValueError, match="no seg_first"):
        huffman_decode(dataclasses.replace(layout, seg_first=None))
    return layout


@pytest.mark.parametrize(
    ("shape", "density", "bits", "batch", "dtype"),
    [
        ((1, 1), 1.0, 1, 1, torch.float32),
        ((7, 13), 0.3, 4, 3, torch.float16),
        ((1, 300), 0.2, 5, 8, torch.bfloat16),
        ((300, 1), 0.5, 3, 2, torch.float32),
        ((17, 60), 1e-9, 8, 5, torch.float16),  # a single kept weight
        ((5, 700), 0.9, 8, 1, torch.bfloat16),  # dense 8-bit rows: many column blocks
    ],
)
def test_odd_shapes(shape, density, bits, batch, dtype):
    check(random_compressed_matrix(*shape, density, bits, seed=fresh_seed()), batch, dtype)


@pytest.mark.parametrize("batch", [4, 9])
def test_batches_and_strides(batch):
    # 9 rows of x: a launch of 8 then one of 1; a strided x; no bias.
    matrix = random_compressed_matrix(11, 40, 0.3, 3, seed=fresh_seed())
    check(matrix, batch, torch.float32, bias=False, strided=True, segment_symbols=4)


def test_one_symbol_alphabet_and_longest_codes():
    check(random_compressed_matrix(6, 20, 1.0, 2, seed=fresh_seed(), codebook_size=1), 2)
    fib = [1, 1]
    while len(fib) < 14:
        fib.append(fib[-1] + fib[-2])
    codes = np.random.default_rng(fresh_seed()).permutation(np.repeat(np.arange(14), fib)).astype(np.uint8)
    mask = np.ones((2, codes.size // 2), dtype=bool)
    matrix = CompressedMatrix.from_dense(mask, codes.reshape(mask.shape), np.linspace(-1, 1, 16), 4)
    assert check(matrix, 1, escape=1).table_bits == 12


@pytest.mark.parametrize("cols", [150, 300])  # lengths in 2-bit units with padding; int16 lengths
def test_length_units(cols):
    mask = np.zeros((6, cols), dtype=bool)
    mask[::2] = True
    codes = np.random.default_rng(fresh_seed()).integers(0, 5, size=mask.shape)
    matrix = CompressedMatrix.from_dense(mask, codes, np.linspace(-1, 1, 5), 3)
    layout = check(matrix, 2, segment_symbols=200)
    assert (layout.len_unit, layout.seg_len.dtype) in ((2, torch.uint8), (1, torch.int16))


def test_empty_rows_segments_and_layer():
    mask = np.zeros((21, 90), dtype=bool)
    mask[::3, 5::11] = True  # two rows in three empty, most column blocks empty
    codes = np.random.default_rng(fresh_seed()).integers(0, 4, size=mask.shape)
    check(CompressedMatrix.from_dense(mask, codes, np.array([-0.5, 0.1, 0.2, 2.0]), 2), 3, segment_symbols=1)
    empty = CompressedMatrix((5, 9), np.ones(1, np.float32), np.zeros(6, np.int64), [], [], 1)
    check(empty, 2)  # no kept weights: y = bias


def test_corrupt_stream_still_writes_every_output_once():
    # Bypass load-time validation: the kernel must still terminate and write each output.
    matrix = random_compressed_matrix(9, 50, 0.3, 4, seed=fresh_seed())
    layout = HuffmanLayout.from_matrix(matrix, segment_symbols=4)
    words = torch.randint(-(2**31), 2**31 - 1, layout.words.shape, dtype=torch.int32)
    # Random stream; then also offsets and lengths pointing anywhere (clamped to the stream).
    prog_base = torch.randint(-(2**20), 2**20, layout.prog_base.shape, dtype=layout.prog_base.dtype)
    seg_len = torch.randint(0, 256, layout.seg_len.shape, dtype=torch.uint8)
    for corrupt in (
        dataclasses.replace(layout, words=words),
        dataclasses.replace(layout, words=words, prog_base=prog_base, seg_len=seg_len),
    ):
        for prefetch in (False, True):
            out = torch.full((2, 9), float("nan"))
            huffman_linear(torch.randn(2, 50), corrupt, out=out, prefetch=prefetch)
            assert not torch.isnan(out).any()
        huffman_decode(corrupt)  # terminates, writes only inside its outputs
        dense = huffman_decode_dense(dataclasses.replace(corrupt, seg_first=None))  # no seg_first needed
        assert dense.shape == (9, 50) and torch.isfinite(dense).all()


def test_bad_input():
    layout = HuffmanLayout.from_matrix(random_compressed_matrix(3, 8, 0.5, 2, seed=0))
    with pytest.raises(ValueError, match="shape"):
        huffman_linear(torch.randn(2, 7), layout)
    with pytest.raises(TypeError, match="dtype"):
        huffman_linear(torch.randn(2, 8).double(), layout)
    with pytest.raises(TypeError):
        huffman_linear(torch.randn(2, 8), "layout")
    with pytest.raises(TypeError, match="HuffmanLayout"):
        huffman_decode_dense("layout")
    assert huffman_linear(torch.randn(0, 8), layout).shape == (0, 3)
