"""The Huffman kernels under TRITON_INTERPRET=1 (tests/conftest.py) against the references, on
fresh random inputs, with outputs poisoned with NaN before every launch."""

import dataclasses

import numpy as np
import pytest
import torch

from compress import CompressedMatrix
from dc_kernels.huffman import HuffmanLayout, huffman_decode, huffman_decode_dense, huffman_linear, launch
from dc_kernels.huffman.launch import LaunchConfig, launch_config, register_budget, steps_granularity
from tests.helpers import assert_matches_reference, fresh_seed, random_input
from workloads import random_compressed_matrix


def check(matrix: CompressedMatrix, batch: int, dtype=torch.float32, bias=True, strided=False, **kwargs):
    layout = HuffmanLayout.from_matrix(matrix, **kwargs)
    seed = fresh_seed()
    x = random_input(batch, matrix.shape[1], dtype, strided, seed)
    b = torch.randn(matrix.shape[0], generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    out = torch.full((batch, matrix.shape[0]), float("nan"), dtype=dtype)
    y = huffman_linear(x, layout, b, out=out)
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
        ((5, 700), 0.9, 8, 1, torch.bfloat16),  # dense 8-bit rows: many pieces, 256 codes
    ],
)
def test_odd_shapes(shape, density, bits, batch, dtype):
    check(random_compressed_matrix(*shape, density, bits, seed=fresh_seed()), batch, dtype)


@pytest.mark.parametrize("batch", [4, 9])
def test_batches_and_strides(batch):
    # 9 rows of x: a launch of 8 then one of 1; a strided x; no bias.
    matrix = random_compressed_matrix(11, 40, 0.3, 3, seed=fresh_seed())
    check(matrix, batch, torch.float32, bias=False, strided=True, segment_symbols=4)


def test_codings_and_table_sizes():
    # Every part of a step: escapes, raw code and gap bits, joint symbols, tables of 4..10 bits.
    matrix = random_compressed_matrix(9, 120, 0.15, 4, seed=fresh_seed())
    for coding in ((0, 0, 1), (3, 0, 2), (0, 4, 8), (2, 2, 4)):
        layout = check(matrix, 2, torch.float16, segment_symbols=3, coding=coding, max_table_bits=10)
        assert (layout.gap_raw_bits, layout.code_raw_bits, layout.q_levels) == coding
    assert check(matrix, 1, max_table_bits=4).table_bits <= 4


def test_x_on_chip_and_from_memory():
    # Batch 1 reads x from its on-chip copy when it fits (16 warps for a wide x), else from memory.
    wide = random_compressed_matrix(2, 9000, 0.005, 5, seed=fresh_seed())
    layout = check(wide, 1, torch.float16, slabs=1)
    assert layout.lanes == 512 and launch_config(layout, 1, torch.float16).XW == 16384
    # By default a wide x is cut into column slabs: two of 4512 columns, a program's copy one slab.
    layout = check(wide, 1, torch.float16)
    assert (layout.slabs, layout.slab_width, layout.lanes) == (2, 4512, 128)
    assert launch_config(layout, 1, torch.float16).XW == 8192
    narrow = random_compressed_matrix(3, 5000, 0.01, 5, seed=fresh_seed())
    layout = check(narrow, 1, torch.float32)
    assert layout.lanes == 128 and launch_config(layout, 1, torch.float32).XW == 0


@pytest.mark.parametrize(
    ("shape", "density", "slabs", "batch", "dtype"),
    [
        ((7, 13), 0.3, 2, 3, torch.float16),
        ((37, 101), 0.3, 4, 1, torch.float32),
        ((300, 200), 0.2, 2, 9, torch.bfloat16),  # a launch of 8, then one of 1
        ((5, 9), 0.5, 8, 2, torch.float32),  # slabs of 16 columns: all but the first empty
        ((1, 3000), 0.05, 4, 1, torch.float16),
    ],
)
def test_column_slabs(shape, density, slabs, batch, dtype):
    """Each program covers one slab of columns; a row's slab sums meet in the last of its programs,
    launch after launch on the same layout (its counts carry over)."""
    matrix = random_compressed_matrix(*shape, density, 5, seed=fresh_seed())
    layout = check(matrix, batch, dtype, slabs=slabs)
    assert layout.slabs == slabs and layout.n_programs == slabs * -(-shape[0] // layout.rows_per_program)
    x = random_input(batch, shape[1], dtype, False, fresh_seed())
    for _ in range(3):
        assert_matches_reference(huffman_linear(x, layout), x, matrix, None)


def test_closing_iterations():
    # x on chip: programs of 12..15 steps run one whole iteration of K = 8, then a half and a
    # quarter, or a half (of 2 steps); of 57 and 49 steps with K = 16: 3 whole ones, then a half
    # and a quarter, or a quarter (of 4 steps).
    for rows, segment_symbols, k, closing in ((48, 10, 8, {2, 3}), (24, 40, 16, {1, 3})):
        matrix = random_compressed_matrix(rows, 4096, 0.1, 5, seed=3)
        for dtype in (torch.float16, torch.float32):
            layout = check(matrix, 1, dtype, segment_symbols=segment_symbols)
            config = launch_config(layout, 1, dtype)
            assert (config.K, steps_granularity(config.K)) == (k, k // 4)
            quarters = {-(-int(s) // (k // 4)) % 4 for s in layout.prog_steps}
            assert closing <= quarters


def test_register_budgets(monkeypatch):
    """A budget only where ptxas's own choice spilled: x read from memory, and float32 x on chip
    with 4 warps and at most 4 steps an iteration before Triton 3.9 (with 8 and 16 steps that
    budget spilled and ptxas's own choice did not)."""
    memory = LaunchConfig(K=2, BB=8, XW=0, num_warps=8)
    assert register_budget(memory, torch.float16) == {"maxnreg": launch.MEMORY_X_REGISTER_BUDGET}
    for before_3_9 in (True, False):
        monkeypatch.setattr(launch, "triton_at_least", lambda version, old=before_3_9: not old)
        for k in (2, 4, 8, 16):
            small = LaunchConfig(K=k, BB=1, XW=4096, num_warps=4)
            budget = {"maxnreg": launch.SMALL_ON_CHIP_REGISTER_BUDGET} if before_3_9 and k <= 4 else {}
            assert register_budget(small, torch.float32) == budget
            assert register_budget(small, torch.float16) == {}
            assert register_budget(dataclasses.replace(small, num_warps=8), torch.float32) == {}


def test_one_symbol_alphabet_and_longest_codes():
    check(random_compressed_matrix(6, 20, 1.0, 2, seed=fresh_seed(), codebook_size=1), 2)
    # Counts 1, 1, 2, 4, ...: the deepest Huffman tree, its 13 bits limited to the table's 10.
    counts = [1, *(1 << i for i in range(13))]
    codes = np.random.default_rng(fresh_seed()).permutation(np.repeat(np.arange(14), counts)).astype(np.uint8)
    mask = np.ones((2, codes.size // 2), dtype=bool)
    matrix = CompressedMatrix.from_dense(mask, codes.reshape(mask.shape), np.linspace(-1, 1, 16), 4)
    assert check(matrix, 1, coding=(0, 0, 1), max_table_bits=10).table_bits == 10


def test_padded_lanes_and_empty_rows():
    mask = np.zeros((6, 300), dtype=bool)
    mask[::2] = True
    codes = np.random.default_rng(fresh_seed()).integers(0, 5, size=mask.shape)
    layout = check(CompressedMatrix.from_dense(mask, codes, np.linspace(-1, 1, 5), 3), 2, segment_symbols=300)
    # Empty rows' lanes hold their warp's words of one bits: END from the first step.
    assert layout.bit_counts()["lane_padding_bits"] > layout.total_bits
    mask = np.zeros((21, 90), dtype=bool)
    mask[::3, 5::11] = True  # two rows in three empty
    codes = np.random.default_rng(fresh_seed()).integers(0, 4, size=mask.shape)
    check(CompressedMatrix.from_dense(mask, codes, np.array([-0.5, 0.1, 0.2, 2.0]), 2), 3, segment_symbols=1)
    empty = CompressedMatrix((5, 9), np.ones(1, np.float32), np.zeros(6, np.int64), [], [], 1)
    check(empty, 2)  # no kept weights: y = bias


def test_corrupt_layout_still_writes_every_output_once():
    # Bypass load-time validation: the kernels must still terminate, read and write in bounds.
    matrix = random_compressed_matrix(9, 50, 0.3, 4, seed=fresh_seed())
    layout = HuffmanLayout.from_matrix(matrix, segment_symbols=4)
    words = torch.randint(-(2**31), 2**31 - 1, layout.words.shape, dtype=torch.int32)
    # A random stream; then also offsets and spans pointing anywhere (clamped).
    warp_base = torch.randint(-(2**20), 2**20, layout.warp_base.shape, dtype=layout.warp_base.dtype)
    seg_span = torch.randint(0, 256, layout.seg_span.shape, dtype=torch.uint8)
    for corrupt in (
        dataclasses.replace(layout, words=words),
        dataclasses.replace(layout, words=words, warp_base=warp_base, seg_span=seg_span),
    ):
        for batch in (1, 2):
            out = torch.full((batch, 9), float("nan"))
            huffman_linear(torch.randn(batch, 50), corrupt, out=out)
            assert not torch.isnan(out).any()
        huffman_decode(corrupt)  # terminates, writes only inside its outputs
        dense = huffman_decode_dense(dataclasses.replace(corrupt, seg_first=None))  # no seg_first needed
        assert dense.shape == (9, 50) and torch.isfinite(dense).all()
    # Row ids out of range are not written (the rows they displaced stay as they were).
    bad_rows = dataclasses.replace(layout, row_ids=torch.full_like(layout.row_ids, 30000))
    out = torch.zeros(1, 9)
    huffman_linear(torch.randn(1, 50), bad_rows, out=out)
    assert torch.equal(out, torch.zeros(1, 9))
    assert torch.equal(huffman_decode_dense(bad_rows), torch.zeros(9, 50))


def test_prefetches_stay_inside_the_words_and_the_table(monkeypatch):
    """The compiled kernels ask L1 for stream rows ahead and for the decode table (``PREFETCH``,
    inline asm the interpreter cannot run): here each request is recorded instead, with its mask,
    on sound layouts (where rows ahead exist, so the check is not vacuous) and on corrupt ones
    (random words, offsets and spans): every address asked for lies inside its array."""
    from dc_kernels.huffman import kernels, launch

    asked = []

    def record(base_ptr, offset, mask, ahead):
        base = int(np.asarray(base_ptr.handle.data).reshape(-1)[0])
        at = np.asarray(offset.handle.data).astype(np.int64).reshape(-1) + (512 if ahead else 0)
        asked.append((base, bool(ahead), at[np.asarray(mask.handle.data).reshape(-1).astype(bool)]))

    monkeypatch.setattr(kernels, "_prefetch_l1", record)
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    assert kernels.ROWS_AHEAD * 128 == 512
    matrix = random_compressed_matrix(16, 2000, 0.3, 5, seed=fresh_seed())
    layout = HuffmanLayout.from_matrix(matrix, segment_symbols=128)
    gen = torch.Generator().manual_seed(fresh_seed())
    words = torch.randint(-(2**31), 2**31 - 1, layout.words.shape, dtype=torch.int32, generator=gen)
    offsets = layout.warp_base.dtype
    warp_base = torch.randint(-(2**20), 2**20, layout.warp_base.shape, dtype=offsets, generator=gen)
    corrupt = dataclasses.replace(layout, words=words, warp_base=warp_base)

    def check_asked(case: HuffmanLayout) -> None:
        (words_base,) = {base for base, ahead, _ in asked if ahead}
        for base, ahead, at in asked:
            limit = 4 * (case.words.numel() if base == words_base else case.table.numel()) - 4
            assert at.size == 0 or (at.min() >= 0 and at.max() <= limit), (ahead, at.min(), at.max(), limit)

    for case, sound in ((layout, True), (corrupt, False)):
        for batch in (1, 2):
            asked.clear()
            x = random_input(batch, 2000, torch.float32, False, fresh_seed())
            out = huffman_linear(x, case)
            check_asked(case)
            if sound:
                assert_matches_reference(out, x, matrix, None)
                assert any(ahead and at.size for _, ahead, at in asked)  # rows ahead were asked for
        asked.clear()
        huffman_decode(case)
        check_asked(case)


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
