import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix, encode_relative, layer_size, size_table
from tests.helpers import random_layers
from workloads import random_compressed_matrix


def test_hand_computed_layer():
    # 2 x 40, 3-bit indices (escape 7): row 0 keeps column 20 (fillers 7, 7 then z=6),
    # row 1 keeps columns 0 and 1 (z=0, 0). 5 entries, 2-entry codebook, 1-bit codes.
    mask = np.zeros((2, 40), bool)
    mask[0, 20] = mask[1, 0] = mask[1, 1] = True
    m = CompressedMatrix.from_dense(mask, mask.astype(int), [0.0, 1.0], bits=1)
    row = layer_size(m, 3)
    assert row["nnz"] == 3 and row["fillers"] == 2 and row["weights"] == 80
    assert row["code_stream_bits_pq"] == 5 * 1
    assert row["index_stream_bits_pq"] == 5 * 3
    # codebook 2 x 32 bits, row pointers 3 x bit_length(5) = 3 x 3 bits.
    assert row["overhead_bits_pq"] == 64 + 9
    assert row["bytes_pq"] == math.ceil((5 + 15 + 73) / 8)
    assert row["weight_bits_pq"] == pytest.approx(5 / 3)
    assert row["index_bits_pq"] == pytest.approx(15 / 3)
    assert row["rate_pq"] == pytest.approx(row["bytes_pq"] / (80 * 4))
    assert m.size_report(index_bits=3) == row


@settings(max_examples=40, deadline=None)
@given(m=random_layers(min_density=0.005), index_bits=st.integers(1, 8))
def test_counts_come_from_the_real_encoding(m, index_bits):
    encoded = encode_relative(m, index_bits)
    counts = encoded.bit_counts()
    row = layer_size(m, index_bits)
    assert row["code_stream_bits_pq"] == counts["code_bits"]
    assert row["index_stream_bits_pq"] == counts["index_bits"]
    assert row["overhead_bits_pq"] == counts["codebook_bits"] + counts["row_ptr_bits"]
    assert row["bytes_pq"] * 8 >= encoded.total_bits() > (row["bytes_pq"] - 1) * 8
    # Fillers are the only reason to exceed the nominal widths.
    assert row["weight_bits_pq"] >= m.bits
    assert (row["weight_bits_pq"] == m.bits) == (row["fillers"] == 0)


def test_table_and_total_row():
    layers = {
        "a": random_compressed_matrix(100, 200, 0.1, 5, seed=1),
        "b": random_compressed_matrix(50, 30, 0.3, 4, seed=2),
    }
    table = size_table(layers, {"a": 5, "b": 4})
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["a", "b", "total"]
    for column in ("weights", "density", "weight_bits_pq", "index_bits_pq", "rate_pq", "bytes_pq"):
        assert column in table.columns
    assert table.loc["b", "index_bit_width"] == 4
    total = table.loc["total"]
    assert total["weights"] == 20000 + 1500
    assert total["density"] == pytest.approx((layers["a"].nnz + layers["b"].nnz) / 21500)
    assert total["bytes_pq"] == table.loc["a", "bytes_pq"] + table.loc["b", "bytes_pq"]
    assert total["rate_pq"] == pytest.approx(total["bytes_pq"] / (21500 * 4))
    code_bits = table.loc["a", "code_stream_bits_pq"] + table.loc["b", "code_stream_bits_pq"]
    assert total["weight_bits_pq"] == pytest.approx(code_bits / total["nnz"])
    # A single width for all layers, and (name, matrix) pairs.
    same = size_table(list(layers.items()), 5)
    assert same.loc["a", "bytes_pq"] == table.loc["a", "bytes_pq"]


def test_bad_tables():
    m = random_compressed_matrix(4, 4, 0.5, 2)
    with pytest.raises(ValueError, match="at least one"):
        size_table({})
    with pytest.raises(TypeError, match="CompressedMatrix"):
        size_table({"x": np.zeros((4, 4))})
    with pytest.raises(ValueError, match="reserved"):
        size_table({"total": m})
    with pytest.raises(ValueError, match="index_bits"):
        layer_size(m, 0)
