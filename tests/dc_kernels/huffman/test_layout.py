"""The Huffman GPU form: exact round trips, its bit accounting, and rejection of corrupt state."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix
from dc_kernels.fixed.layout import GpuLayout
from dc_kernels.huffman.layout import MAX_TABLE_BITS, HuffmanLayout, HuffmanLayoutError
from workloads import random_compressed_matrix


def round_trip(matrix: CompressedMatrix, **kwargs) -> HuffmanLayout:
    layout = HuffmanLayout.from_matrix(matrix, **kwargs)
    loaded = HuffmanLayout.from_state(layout.tensors(), layout.metadata())
    assert loaded.to_matrix().equals(matrix)
    for name in ("table", "prog_steps", "seg_first"):  # derived at load == derived at build
        assert torch.equal(getattr(loaded, name), getattr(layout, name)), name
    return layout


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 300),
    density=st.floats(1e-4, 1.0),
    bits=st.integers(1, 8),
    segment_symbols=st.sampled_from([1, 4, 32, 200]),
    seed=st.integers(0, 2**31),
)
def test_round_trip(rows, cols, density, bits, segment_symbols, seed):
    matrix = random_compressed_matrix(rows, cols, density, bits, seed=seed)
    layout = round_trip(matrix, segment_symbols=segment_symbols)
    assert layout.table.numel() * 4 <= 16 * 1024
    assert int(layout.code_lengths.max()) <= MAX_TABLE_BITS


def test_edge_cases_round_trip():
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    # One kept weight, a one-symbol alphabet, every escape width, empty rows and blocks.
    round_trip(random_compressed_matrix(9, 31, 1e-9, 3, seed=seed))
    one_symbol = random_compressed_matrix(5, 17, 1.0, 2, seed=seed, codebook_size=1)
    assert int((one_symbol.codes != 0).sum()) == 0
    layout = round_trip(one_symbol)
    assert layout.total_bits == one_symbol.nnz  # one bit per weight, no zero-length code
    for escape in (1, 2, 3, 16):
        round_trip(random_compressed_matrix(6, 200, 0.05, 4, seed=seed), escape=escape)
    empty = CompressedMatrix((4, 8), np.zeros(1, np.float32), np.zeros(5, np.int64), [], [], 1)
    layout = round_trip(empty)
    assert layout.nnz == 0 and int(layout.prog_steps.max()) == 0
    rows = np.arange(30) % 4 == 0  # most rows empty
    mask = np.zeros((30, 500), dtype=bool)
    mask[rows, ::7] = True
    round_trip(
        CompressedMatrix.from_dense(mask, np.ones(mask.shape, np.uint8), np.array([0.5, 1.0], np.float32))
    )


def test_longest_codes_fill_the_table():
    # Fibonacci counts make the deepest Huffman tree: 14 symbols need 13 bits, limited to 12.
    fib = [1, 1]
    while len(fib) < 14:
        fib.append(fib[-1] + fib[-2])
    codes = np.random.default_rng(0).permutation(np.repeat(np.arange(14), fib)).astype(np.uint8)
    mask = np.ones((2, codes.size // 2), dtype=bool)
    matrix = CompressedMatrix.from_dense(mask, codes.reshape(mask.shape), np.linspace(-1, 1, 16), 4)
    layout = round_trip(matrix, escape=1)  # a chosen escape keeps the longest length limit
    assert int(layout.code_lengths.max()) == MAX_TABLE_BITS == layout.table_bits


def test_bits_beat_fixed_width_on_paper_like_layer():
    # Alex-8's density (25%) with 4-bit codes at reduced size: the joint code is near entropy.
    matrix = random_compressed_matrix(250, 4096, 0.25, 4, seed=1)
    huff = HuffmanLayout.from_matrix(matrix)
    fixed = GpuLayout.from_matrix(matrix)
    counts = huff.bit_counts()
    assert sum(counts.values()) == huff.total_bits_resident()
    assert huff.bits_per_kept_weight() < 0.97 * fixed.bits_per_kept_weight()
    p = matrix.density
    entropy = 4 + (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))) / p  # uniform codes + geometric gaps
    assert counts["stream_bits"] / matrix.nnz < 1.02 * entropy


def alternating_rows(cols: int, seed: int) -> CompressedMatrix:
    """Dense rows between empty ones, 5 uniform codes (codewords of 2 and 3 bits): segment
    lengths spread 0..~2.3 bits x cols, so the length unit and width depend on ``cols``."""
    mask = np.zeros((6, cols), dtype=bool)
    mask[::2] = True
    codes = np.random.default_rng(seed).integers(0, 5, size=mask.shape)
    return CompressedMatrix.from_dense(mask, codes, np.linspace(-1, 1, 5), 3)


def test_length_units_and_widths():
    padded = HuffmanLayout.from_matrix(alternating_rows(150, 0), segment_symbols=200)
    assert padded.len_unit == 2 and padded.seg_len.dtype == torch.uint8
    lengths = padded.code_lengths.numpy().astype(np.int64)
    assert padded.total_bits == lengths[alternating_rows(150, 0).codes].sum() + 1  # one padding bit
    round_trip(alternating_rows(150, 0), segment_symbols=200)
    wide = round_trip(alternating_rows(300, 0), segment_symbols=200)
    assert wide.len_unit == 1 and wide.seg_len.dtype == torch.int16
    # A set padding bit is rejected (the padded form is unique).
    tensors, meta = _state(padded)
    ends = np.cumsum((tensors["seg_len"].numpy().astype(np.int64) + padded.len_base) * padded.len_unit)
    words = tensors["words"].numpy().view(np.uint32)
    for end in ends[ends > 0]:
        bit = int(end) - 1
        words[bit // 32] ^= np.uint32(1 << (31 - bit % 32))
        try:
            HuffmanLayout.from_state(tensors, meta)
        except HuffmanLayoutError:
            break
        words[bit // 32] ^= np.uint32(1 << (31 - bit % 32))
    else:
        raise AssertionError("no segment's last bit flip was rejected")


def _state(layout):
    return {n: t.clone() for n, t in layout.tensors().items()}, layout.metadata()


def test_corrupt_state_is_rejected():
    matrix = random_compressed_matrix(20, 90, 0.2, 4, seed=3)
    layout = HuffmanLayout.from_matrix(matrix, segment_symbols=4)
    rng = np.random.default_rng(0)
    rejected = exact = 0
    for _ in range(150):  # single bit flips anywhere in the stream
        tensors, meta = _state(layout)
        words = tensors["words"].numpy().view(np.uint32)
        bit = int(rng.integers(0, layout.total_bits))
        words[bit // 32] ^= np.uint32(1 << (31 - bit % 32))
        try:
            loaded = HuffmanLayout.from_state(tensors, meta)
        except HuffmanLayoutError:
            rejected += 1
            continue
        # A flip that still decodes consistently must decode to a valid, different layer.
        assert not loaded.to_matrix().equals(matrix)
        exact += 1
    assert rejected > 0
    for name, change in [
        ("seg_len", lambda t: t.__setitem__(0, t[0] + 1)),
        ("prog_base", lambda t: t.__setitem__(-1, t[-1] - 1)),
        ("code_lengths", lambda t: t.__setitem__(0, 13)),
        ("codebook", lambda t: t.__setitem__(0, float("nan"))),
        ("words", lambda t: t.resize_(t.numel() + 1)),
    ]:
        tensors, meta = _state(layout)
        change(tensors[name])
        with pytest.raises(HuffmanLayoutError):
            HuffmanLayout.from_state(tensors, meta)
    for key, value in [("nnz", layout.nnz + 1), ("escape", 4096), ("col_blocks", 3), ("rows_per_program", 1)]:
        tensors, meta = _state(layout)
        with pytest.raises(HuffmanLayoutError):
            HuffmanLayout.from_state(tensors, {**meta, key: value})
    tensors, meta = _state(layout)
    del tensors["words"]
    with pytest.raises(HuffmanLayoutError, match="missing"):
        HuffmanLayout.from_state(tensors, meta)


def test_bad_arguments():
    matrix = random_compressed_matrix(4, 10, 0.5, 5, seed=0)
    with pytest.raises(TypeError):
        HuffmanLayout.from_matrix(matrix.to_dense())
    with pytest.raises(ValueError, match="segment_symbols"):
        HuffmanLayout.from_matrix(matrix, segment_symbols=0)
    with pytest.raises(ValueError, match="escape"):
        HuffmanLayout.from_matrix(matrix, escape=200)  # 32 * 200 + 1 symbols > 4096
