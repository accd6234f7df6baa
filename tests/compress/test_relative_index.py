import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix, decode_relative, encode_relative
from tests.helpers import random_layers
from workloads import random_compressed_matrix


@settings(max_examples=80, deadline=None)
@given(m=random_layers(max_rows=30, max_cols=200), index_bits=st.integers(1, 8))
def test_round_trip(m, index_bits):
    bits = m.bits
    layer = encode_relative(m, index_bits)
    assert decode_relative(layer).equals(m)
    assert layer.entries == m.nnz + layer.fillers
    counts = layer.bit_counts()
    assert counts["code_bits"] == layer.entries * bits
    assert counts["index_bits"] == layer.entries * index_bits


def test_fillers_bridge_wide_gaps():
    # One kept weight at column 20 with 3-bit indices: escape advances 7, so 20 = 7 + 7 + 6.
    mask = np.zeros((1, 32), bool)
    mask[0, 20] = True
    m = CompressedMatrix.from_dense(mask, np.full((1, 32), 1), [0.0, 1.0], bits=1)
    layer = encode_relative(m, 3)
    assert layer.z.tolist() == [7, 7, 6]
    assert layer.codes.tolist() == [0, 0, 1]
    assert layer.fillers == 2
    assert decode_relative(layer).equals(m)


def test_rows_restart_relative_indices():
    mask = np.array([[0, 1, 0, 1], [1, 0, 0, 1]], bool)
    m = CompressedMatrix.from_dense(mask, mask.astype(int), [0.0, 1.0], bits=1)
    layer = encode_relative(m, 4)
    assert layer.z.tolist() == [1, 1, 0, 2]
    assert layer.row_ptr.tolist() == [0, 2, 4]


def test_corrupt_stream_is_rejected():
    m = random_compressed_matrix(3, 10, 0.5, 2, seed=0)
    layer = encode_relative(m, 4)
    z = layer.z.copy()
    z[-1] = 14  # pushes the last column past in_features
    bad = type(layer)(layer.shape, layer.bits, 4, layer.codebook, layer.row_ptr, z, layer.codes)
    with pytest.raises(ValueError, match="outside in_features"):
        decode_relative(bad)


@pytest.mark.parametrize("index_bits", [0, 9])
def test_index_bits_range(index_bits):
    with pytest.raises(ValueError, match="index_bits"):
        encode_relative(random_compressed_matrix(2, 2, 1.0, 1), index_bits)


def test_huge_row_pointers_are_rejected_not_overflowed():
    m = random_compressed_matrix(3, 10, 0.5, 2, seed=0)
    layer = encode_relative(m, 4)
    row_ptr = layer.row_ptr.copy()
    row_ptr[1] = np.iinfo(np.int64).max
    bad = type(layer)(layer.shape, layer.bits, 4, layer.codebook, row_ptr, layer.z, layer.codes)
    with pytest.raises(ValueError, match="row_ptr values"):
        decode_relative(bad)
