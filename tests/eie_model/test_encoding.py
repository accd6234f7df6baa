import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix
from eie_model import CodebookTooLargeError, decode_eie, encode_eie, fit_codebook
from workloads import random_compressed_matrix


def _column(values: list[int]) -> CompressedMatrix:
    """A one-column layer whose non-zero values 1, 2, 3 ... are codebook entries 0, 1, 2 ..."""
    col = np.array(values)
    mask = (col != 0)[:, None]
    codes = np.maximum(col - 1, 0).astype(np.uint8)[:, None]
    return CompressedMatrix.from_dense(mask, codes, np.arange(1, col.max() + 1, dtype=np.float32), bits=4)


def test_paper_worked_example():
    layer = encode_eie(_column([0, 0, 1, 2] + [0] * 18 + [3]), pes=1, weight_bits=4, index_bits=4)
    assert layer.v.tolist() == [1, 2, 0, 3]
    assert layer.z.tolist() == [2, 0, 15, 2]
    assert layer.ptr.tolist() == [[[0, 4]]]
    assert layer.entries == 4 and layer.padding_entries == 1
    assert layer.codebook.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_gap_of_exactly_the_index_range_needs_one_filler():
    # 16 zeros before the entry: a filler (z = 15) covers rows 0..15, then z = 0.
    layer = encode_eie(_column([0] * 16 + [1]), pes=1, index_bits=4)
    assert layer.v.tolist() == [0, 1] and layer.z.tolist() == [15, 0]
    layer = encode_eie(_column([0] * 15 + [1]), pes=1, index_bits=4)
    assert layer.v.tolist() == [1] and layer.z.tolist() == [15]


def test_rows_are_interleaved_over_pes():
    # Column [1, 2, 3, 4, 5, 6] over 4 PEs: PE k holds rows k and k + 4.
    layer = encode_eie(_column([1, 2, 3, 4, 5, 6]), pes=4)
    for pe, expected_v in enumerate([[1, 5], [2, 6], [3], [4]]):
        lo, hi = layer.slice_start[pe], layer.slice_start[pe + 1]
        assert layer.v[lo:hi].tolist() == expected_v
        assert layer.z[lo:hi].tolist() == [0] * len(expected_v)
    assert layer.entry_rows().tolist() == [0, 4, 1, 5, 2, 3]


def test_batches_restart_the_relative_index():
    # 1 PE, 6 rows, batches of 2 rows: rows 1 | 2, 3 | 5 -> z counted from each batch's start.
    layer = encode_eie(_column([0, 1, 2, 3, 0, 4]), pes=1, batch_rows=2)
    assert layer.batches == 3
    assert layer.v.tolist() == [1, 2, 3, 4] and layer.z.tolist() == [1, 0, 0, 1]
    assert layer.ptr[:, 0, -1].tolist() == [1, 2, 1]
    assert decode_eie(layer).equals(_column([0, 1, 2, 3, 0, 4]))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 40),
    cols=st.integers(1, 30),
    density=st.floats(0.01, 1.0),
    pes=st.integers(1, 9),
    weight_bits=st.integers(1, 5),
    index_bits=st.integers(1, 6),
    batch_rows=st.one_of(st.none(), st.integers(1, 8)),
    seed=st.integers(0, 10_000),
)
def test_round_trip(rows, cols, density, pes, weight_bits, index_bits, batch_rows, seed):
    k = (1 << weight_bits) - 1
    matrix = random_compressed_matrix(rows, cols, density, weight_bits, seed=seed, codebook_size=k)
    layer = encode_eie(matrix, pes, weight_bits, index_bits, batch_rows)
    assert decode_eie(layer).equals(matrix)
    assert layer.entries - layer.padding_entries == matrix.nnz
    assert int(layer.z.max(initial=0)) < 1 << index_bits
    # A padding entry only ever carries the largest z.
    assert np.all(layer.z[layer.v == 0] == (1 << index_bits) - 1)
    # Every entry lives in the PE that owns its row.
    rows_of = layer.entry_rows()
    pe_of = np.repeat(np.arange(layer.batches * pes) % pes, np.diff(layer.slice_start))
    assert np.array_equal(rows_of % pes, pe_of)


def test_too_many_centroids_is_refused_or_fitted():
    matrix = random_compressed_matrix(50, 40, 0.5, 5, seed=1)  # 32 centroids
    with pytest.raises(CodebookTooLargeError, match=r"32 centroids.*15"):
        encode_eie(matrix, pes=4, weight_bits=4)
    fitted = fit_codebook(matrix, 15)
    assert fitted.codebook.size <= 15
    assert np.array_equal(fitted.mask(), matrix.mask())
    spread = float(matrix.codebook.max() - matrix.codebook.min())
    assert np.abs(fitted.to_dense() - matrix.to_dense()).max() <= spread / 15
    assert decode_eie(encode_eie(fitted, pes=4, weight_bits=4)).equals(
        dataclasses.replace(fitted, bits=4) if fitted.bits != 4 else fitted
    )


def test_fit_codebook_drops_unused_centroids_exactly():
    base = random_compressed_matrix(30, 30, 0.3, 5, seed=2, codebook_size=32)
    codes = (base.codes % 10).astype(np.uint8)  # only 10 of 32 centroids used
    matrix = CompressedMatrix(base.shape, base.codebook, base.row_ptr, base.col_idx, codes, 5)
    fitted = fit_codebook(matrix, 15)
    assert fitted.codebook.size == 10
    assert np.array_equal(fitted.to_dense(), matrix.to_dense())


def test_bad_inputs():
    matrix = random_compressed_matrix(10, 10, 0.3, 3, seed=0, codebook_size=7)
    with pytest.raises(TypeError):
        encode_eie(matrix.to_dense(), pes=2)
    with pytest.raises(ValueError, match="pes"):
        encode_eie(matrix, pes=0)
    with pytest.raises(ValueError, match="index_bits"):
        encode_eie(matrix, index_bits=9)
    with pytest.raises(ValueError, match="max_centroids"):
        fit_codebook(matrix, 0)
    layer = encode_eie(matrix, pes=2, weight_bits=3, index_bits=2)
    z = layer.z.copy()
    z[0] = 7
    with pytest.raises(ValueError, match="z must lie"):
        decode_eie(dataclasses.replace(layer, z=z))
    ptr = layer.ptr.copy()
    ptr[0, 0, 3] = ptr[0, 0, 2] - 1
    with pytest.raises(ValueError, match=r"non-decreasing|slice"):
        decode_eie(dataclasses.replace(layer, ptr=ptr))
    tall = dataclasses.replace(layer, shape=(2, 10))  # rows beyond the layer
    with pytest.raises(ValueError):
        decode_eie(tall)


def test_empty_layer():
    empty = CompressedMatrix((5, 4), np.array([1.0], np.float32), np.zeros(6, np.int64), [], [], 4)
    layer = encode_eie(empty, pes=2)
    assert layer.entries == 0 and layer.ptr.shape == (1, 2, 5)
    assert decode_eie(layer).equals(empty)
