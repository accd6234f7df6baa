import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix, encode_relative
from dc_kernels.fixed.layout import (
    MIN_ENTRY_BITS,
    FixedLayoutError,
    GpuLayout,
    best_index_bits,
    default_block_rows,
    default_lead,
)
from tests.helpers import compressed_matrices
from workloads import PAPER_LAYERS, random_compressed_matrix

SHAPES = st.sampled_from([(None, None), (1, 1), (1, 32), (4, 8), (32, 1), (8, 4), (2, 64)])


@settings(max_examples=60, deadline=None)
@given(
    compressed_matrices(), st.sampled_from([None, 1, 2, 4, 8]), SHAPES, st.sampled_from([None, 0, 3, 10**6])
)
def test_round_trip(matrix, index_bits, shape, lead):
    rows, chunks = shape
    if index_bits is not None and matrix.bits + index_bits < MIN_ENTRY_BITS:
        with pytest.raises(ValueError, match=f"needs at least {MIN_ENTRY_BITS}"):
            GpuLayout.from_matrix(matrix, index_bits=index_bits)
        return
    layout = GpuLayout.from_matrix(matrix, index_bits=index_bits, block_rows=rows, chunks=chunks, lead=lead)
    assert layout.to_matrix().equals(matrix)
    assert np.array_equal(layout.to_dense().numpy(), matrix.to_dense())
    state = GpuLayout.from_state(layout.tensors(), layout.metadata())
    assert state.to_matrix().equals(matrix)


def test_entries_fields_and_waits():
    """A row's slots: kept weights at ``step`` columns after the previous entry, a filler bridging
    a gap wider than the index holds, then waits (all-zero slots) to the end of its group."""
    mask, codes = np.zeros((1, 40), dtype=bool), np.zeros((1, 40), dtype=np.int64)
    mask[0, [1, 2, 30]] = True
    codes[0, [1, 2, 30]] = [0, 1, 2]
    matrix = CompressedMatrix.from_dense(mask, codes, np.arange(4, dtype=np.float32), 2)
    layout = GpuLayout.from_matrix(matrix, index_bits=3, block_rows=1, chunks=1, lead=10**6)
    d = layout.decode_slots()
    kept = d["kept"]
    assert list(d["column"][kept]) == [1, 2, 30] and list(d["code"][kept]) == [0, 1, 2]
    # Gap 27 after column 2: fillers of code * 4 columns, then a kept weight at most 6 past them.
    fillers = ~kept & (d["code"] > 0)
    assert layout.fillers == int(fillers.sum()) >= 1
    assert np.all(d["column"][~kept & (d["code"] == 0)] >= 30)  # the waits after the row
    assert layout.slots == layout.slots_per_group == 256 // 5


def test_schedule_keeps_rows_within_lead_of_the_line():
    matrix = random_compressed_matrix(64, 3000, 0.05, 4, seed=2)
    lead = 60
    layout = GpuLayout.from_matrix(matrix, block_rows=32, chunks=2, lead=lead)
    d = layout.decode_slots()
    groups = layout.block_groups()
    slots = groups[d["block"]] * layout.slots_per_group
    # No kept weight comes before the schedule line reaches its column minus the lead.
    kept = d["kept"]
    earliest = np.maximum((d["column"][kept] - lead) * slots[kept] // layout.in_features, 0)
    assert np.all(d["slot"][kept] >= earliest)


def test_schedule_brings_a_warps_columns_together():
    """The point of the waits: at every slot the 32 rows of a block read x near each other."""
    matrix = random_compressed_matrix(32, 8000, 0.05, 4, seed=3)

    def mean_spread(layout):
        d = layout.decode_slots()
        kept = d["kept"]
        cols = np.full((32, int(d["slot"].max()) + 1), np.nan)
        cols[d["row"][kept], d["slot"][kept]] = d["column"][kept]
        cols = cols[:, ~np.all(np.isnan(cols), axis=0)]
        return float(np.mean(np.nanmax(cols, axis=0) - np.nanmin(cols, axis=0)))

    free = GpuLayout.from_matrix(matrix, block_rows=32, chunks=1, lead=10**6)
    scheduled = GpuLayout.from_matrix(matrix, block_rows=32, chunks=1)
    assert mean_spread(scheduled) < 0.25 * mean_spread(free)
    assert scheduled.slots < 1.3 * free.slots


def test_rows_sorted_longest_first_and_start_columns():
    matrix = random_compressed_matrix(64, 500, 0.1, 4, seed=3)
    layout = GpuLayout.from_matrix(matrix, index_bits=4, block_rows=8, chunks=4)
    d = layout.decode_slots()
    position = d["block"] * 8 + d["row"]
    entries = np.bincount(position, weights=d["kept"] | (d["code"] > 0), minlength=64)
    assert np.all(np.diff(entries) <= 0)  # kept weights and fillers, longest row first
    kept = np.bincount(position, weights=d["kept"], minlength=64)
    assert np.array_equal(kept, np.diff(matrix.row_ptr)[layout.row_ids.numpy()])
    # Chunk t > 0 starts where chunk t - 1 ended (checked by decoding); narrow columns: int16.
    assert layout.starts.dtype == torch.int16 and layout.starts.numel() == layout.n_blocks * 3 * 8
    wide = GpuLayout.from_matrix(random_compressed_matrix(3, 40000, 0.001, 2, seed=0), chunks=2)
    assert wide.starts.dtype == torch.int32 and wide.to_matrix().equals(wide.to_matrix())


def test_small_layer_takes_more_rows_a_block_not_empty_chunks():
    """A layer of a few hundred short rows: one group a row at most, not a warp of chunks each
    holding an empty head group (458 bits per kept weight before)."""
    matrix = random_compressed_matrix(300, 64, 0.15, 4, seed=0)
    layout = GpuLayout.from_matrix(matrix)
    assert layout.block_rows * layout.chunks >= 32 and layout.chunks == 1
    assert layout.steps * layout.block_rows <= 300 + layout.block_rows  # one group a row
    assert layout.bits_per_kept_weight() < 40 and layout.to_matrix().equals(matrix)
    # Explicit shapes are kept as given.
    assert GpuLayout.from_matrix(matrix, block_rows=2).block_rows == 2


@pytest.mark.parametrize("name", list(PAPER_LAYERS))
def test_bits_within_target_of_relative_index(name):
    """<= 1.3x the paper's relative-index bits (its best index width, fillers counted) at the
    densities and row lengths of the nine paper layers (a quarter of the rows, blocks of rows as
    the whole layer gets them, to keep the test fast)."""
    spec = PAPER_LAYERS[name]
    matrix = random_compressed_matrix(max(spec.outputs // 4, 1), spec.inputs, spec.weight_density, 5, seed=1)
    layout = GpuLayout.from_matrix(matrix, block_rows=default_block_rows(spec.outputs))
    paper = min(encode_relative(matrix, ib).total_bits() for ib in range(1, 9))
    assert 1.0 <= layout.total_bits() / paper <= 1.3
    counts = layout.bit_counts()
    assert layout.total_bits() == sum(counts.values())
    assert (
        counts["kept_bits"] + counts["filler_bits"] + counts["wait_bits"] == layout.slots * layout.entry_bits
    )
    assert layout.words.numel() * 32 == layout.slots * layout.entry_bits + counts["group_padding_bits"]


def test_best_index_bits_minimizes_group_bits():
    matrix = random_compressed_matrix(50, 2000, 0.04, 5, seed=0)
    best = best_index_bits(matrix)
    bits = {ib: GpuLayout.from_matrix(matrix, ib, lead=10**6).bit_counts() for ib in range(1, 9)}
    cost = {ib: c["kept_bits"] + c["filler_bits"] + c["group_padding_bits"] for ib, c in bits.items()}
    assert cost[best] <= 1.05 * min(cost.values())


def test_default_lead_spans_the_same_kept_weights_at_any_density():
    sparse = random_compressed_matrix(20, 4000, 0.02, 4, seed=0)
    dense = random_compressed_matrix(20, 4000, 0.2, 4, seed=0)
    assert default_lead(sparse) == pytest.approx(10 * default_lead(dense), rel=0.1)


def test_empty_matrix():
    matrix = CompressedMatrix((3, 5), np.zeros(1, np.float32), np.zeros(4, np.int64), [], [], 1)
    layout = GpuLayout.from_matrix(matrix)
    assert layout.to_matrix().equals(matrix) and layout.nnz == 0


def test_to_device_and_metadata():
    layout = GpuLayout.from_matrix(random_compressed_matrix(9, 30, 0.3, 3, seed=0), block_rows=2, chunks=16)
    moved = layout.to("cpu")
    assert moved.metadata() == layout.metadata()
    assert all(torch.equal(a, b) for a, b in zip(moved.tensors().values(), layout.tensors().values()))


def test_bad_inputs():
    matrix = random_compressed_matrix(9, 30, 0.3, 3, seed=0)
    with pytest.raises(ValueError, match="block_rows"):
        GpuLayout.from_matrix(matrix, block_rows=3)
    with pytest.raises(ValueError, match="chunks"):
        GpuLayout.from_matrix(matrix, block_rows=32, chunks=64)
    with pytest.raises(ValueError, match="index_bits"):
        GpuLayout.from_matrix(matrix, index_bits=9)
    one_bit = random_compressed_matrix(9, 30, 0.3, 1, seed=0)
    with pytest.raises(ValueError, match=r"index_bits=2 with 1-bit codes makes 3-bit entries"):
        GpuLayout.from_matrix(one_bit, index_bits=2)
    # The narrowest codes get an index field wide enough for entries of MIN_ENTRY_BITS.
    assert GpuLayout.from_matrix(one_bit).entry_bits >= MIN_ENTRY_BITS
    with pytest.raises(ValueError, match="lead"):
        GpuLayout.from_matrix(matrix, lead=-1)
    with pytest.raises(TypeError, match="CompressedMatrix"):
        GpuLayout.from_matrix(matrix.to_dense())
    layout = GpuLayout.from_matrix(matrix, block_rows=2, chunks=16)
    tensors, meta = layout.tensors(), layout.metadata()
    with pytest.raises(FixedLayoutError, match="words"):
        GpuLayout.from_state({**tensors, "words": tensors["words"][:-1]}, meta)
    with pytest.raises(FixedLayoutError, match="int32"):
        GpuLayout.from_state({**tensors, "blocks": tensors["blocks"].long()}, meta)
    with pytest.raises(FixedLayoutError, match="missing"):
        GpuLayout.from_state({}, meta)
    with pytest.raises(FixedLayoutError, match="narrower than"):
        GpuLayout.from_state(tensors, {**meta, "code_bits": 1, "index_bits": 2})
    with pytest.raises(FixedLayoutError, match="outside"):
        GpuLayout.from_state(tensors, {**meta, "in_features": 2}).to_matrix()
    blocks = tensors["blocks"].clone()
    blocks[0] += 1
    with pytest.raises(FixedLayoutError, match="add up"):
        GpuLayout.from_state({**tensors, "blocks": blocks}, meta).to_matrix()
    starts = tensors["starts"].clone()
    starts[0] += 1
    with pytest.raises(FixedLayoutError, match="starts"):
        GpuLayout.from_state({**tensors, "starts": starts}, meta).to_matrix()
    with pytest.raises(FixedLayoutError, match="fillers"):
        GpuLayout.from_state(tensors, {**meta, "fillers": meta["fillers"] + 1}).to_matrix()
