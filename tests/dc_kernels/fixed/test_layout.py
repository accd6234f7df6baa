import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix, encode_relative
from dc_kernels.fixed.layout import GpuLayout, best_index_bits, pack_bits, unpack_bits
from tests.helpers import compressed_matrices
from workloads import PAPER_LAYERS, random_compressed_matrix


@settings(max_examples=60, deadline=None)
@given(compressed_matrices(), st.sampled_from([None, 1, 2, 4, 8]), st.sampled_from([1, 2, 4, 16]))
def test_round_trip(matrix, index_bits, slice_rows):
    layout = GpuLayout.from_matrix(matrix, index_bits=index_bits, slice_rows=slice_rows)
    assert layout.to_matrix().equals(matrix)
    assert np.array_equal(layout.to_dense().numpy(), matrix.to_dense())
    state = GpuLayout.from_state(layout.tensors(), layout.metadata())
    assert state.to_matrix().equals(matrix)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 16), st.integers(0, 200), st.integers(0, 2**16))
def test_pack_unpack(width, n, seed):
    values = np.random.default_rng(seed).integers(0, 1 << width, size=n)
    words = pack_bits(values, width)
    assert words.size == (n * width + 31) // 32 + 1 and words[-1] == 0
    assert np.array_equal(unpack_bits(words, width, n), values)


def test_rows_sorted_longest_first_and_slices_balanced():
    matrix = random_compressed_matrix(64, 500, 0.1, 4, seed=3)
    layout = GpuLayout.from_matrix(matrix, index_bits=4, slice_rows=4)
    per_row = np.diff(encode_relative(matrix, 4).row_ptr)
    sorted_len = per_row[layout.row_ids.numpy()]
    assert np.all(np.diff(sorted_len) <= 0)
    slice_len = np.diff(layout.slice_ptr.numpy()) // 4
    assert np.array_equal(slice_len, sorted_len.reshape(-1, 4).max(axis=1))


@pytest.mark.parametrize("name", list(PAPER_LAYERS))
def test_bits_within_target_of_relative_index(name):
    """<= 1.3x the paper's relative-index bits at the same code/index widths, at the densities of
    the nine paper layers (shape scaled down 4x per side to keep the test fast)."""
    spec = PAPER_LAYERS[name]
    matrix = random_compressed_matrix(
        max(spec.outputs // 4, 1), max(spec.inputs // 4, 1), spec.weight_density, 4, seed=1
    )
    layout = GpuLayout.from_matrix(matrix, index_bits=4)
    ratio = layout.total_bits() / encode_relative(matrix, 4).total_bits()
    assert 1.0 <= ratio <= 1.3
    counts = layout.bit_counts()
    assert layout.total_bits() == sum(counts.values())
    assert counts["entry_bits"] == layout.entries * 8


def test_best_index_bits_minimizes_entry_bits():
    matrix = random_compressed_matrix(50, 2000, 0.04, 5, seed=0)
    best = best_index_bits(matrix)
    cost = {ib: encode_relative(matrix, ib).entries * (5 + ib) for ib in range(1, 9)}
    assert cost[best] == min(cost.values())


def test_empty_matrix():
    matrix = CompressedMatrix((3, 5), np.zeros(1, np.float32), np.zeros(4, np.int64), [], [], 1)
    layout = GpuLayout.from_matrix(matrix)
    assert layout.entries == 0 and layout.to_matrix().equals(matrix)


def test_to_device_and_metadata():
    layout = GpuLayout.from_matrix(random_compressed_matrix(9, 30, 0.3, 3, seed=0), slice_rows=2)
    moved = layout.to("cpu")
    assert moved.metadata() == layout.metadata()
    assert all(torch.equal(a, b) for a, b in zip(moved.tensors().values(), layout.tensors().values()))


def test_bad_inputs():
    matrix = random_compressed_matrix(9, 30, 0.3, 3, seed=0)
    with pytest.raises(ValueError, match="slice_rows"):
        GpuLayout.from_matrix(matrix, slice_rows=3)
    with pytest.raises(ValueError, match="index_bits"):
        GpuLayout.from_matrix(matrix, index_bits=9)
    with pytest.raises(TypeError, match="CompressedMatrix"):
        GpuLayout.from_matrix(matrix.to_dense())
    layout = GpuLayout.from_matrix(matrix)
    tensors = layout.tensors()
    with pytest.raises(ValueError, match="words"):
        GpuLayout.from_state({**tensors, "words": tensors["words"][:-1]}, layout.metadata())
    with pytest.raises(ValueError, match="int64"):
        GpuLayout.from_state({**tensors, "slice_ptr": tensors["slice_ptr"].int()}, layout.metadata())
    with pytest.raises(ValueError, match="missing"):
        GpuLayout.from_state({}, layout.metadata())
    corrupt = {**tensors, "row_ids": tensors["row_ids"].clone()}
    corrupt_meta = {**layout.metadata(), "in_features": 2}
    with pytest.raises(ValueError, match="outside in_features"):
        GpuLayout.from_state(corrupt, corrupt_meta).to_matrix()
