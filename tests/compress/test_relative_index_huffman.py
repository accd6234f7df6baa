import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import CompressedMatrix, encode_relative
from compress.relative_index_huffman import HuffmanLayer, decode_huffman, encode_huffman
from workloads import random_compressed_matrix


def check_round_trip(m: CompressedMatrix, index_bits: int, **kwargs) -> HuffmanLayer:
    layer = encode_huffman(m, index_bits, **kwargs)
    assert decode_huffman(layer).equals(m)
    relative = encode_relative(m, index_bits)
    assert layer.nnz == m.nnz and layer.entries == relative.entries
    assert np.array_equal(layer.row_ptr, relative.row_ptr)
    counts = layer.bit_counts()
    assert counts.keys() == relative.bit_counts().keys()
    # Each stream's payload is at most its fixed width (fillers carry no code here).
    assert layer.z.total_bits <= relative.bit_counts()["index_bits"] or index_bits == 1
    assert layer.codes.total_bits <= m.nnz * m.bits
    return layer


@pytest.mark.parametrize(("bits", "index_bits"), itertools.product(range(1, 9), range(2, 9)))
def test_every_code_and_index_width(bits, index_bits):
    seed = bits * 10 + index_bits
    for density in (0.02, 0.3, 1.0):
        m = random_compressed_matrix(13, 57, density, bits, seed=seed)
        check_round_trip(m, index_bits, segment_symbols=1 + seed % 50)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 25),
    cols=st.integers(1, 300),
    density=st.floats(1e-4, 1.0),
    bits=st.integers(1, 8),
    index_bits=st.integers(1, 8),
    segment=st.integers(1, 64),
    seed=st.integers(0, 2**16),
)
def test_round_trip(rows, cols, density, bits, index_bits, segment, seed):
    m = random_compressed_matrix(rows, cols, density, bits, seed=seed)
    check_round_trip(m, index_bits, segment_symbols=segment)


@pytest.mark.parametrize("shape", [(1, 1), (1, 1000), (1000, 1), (7, 13), (3, 4097)])
def test_single_kept_weight_and_fully_dense(shape):
    for density in (1e-9, 1.0):  # random_compressed_matrix keeps at least one weight
        m = random_compressed_matrix(*shape, density, 3, seed=sum(shape))
        layer = check_round_trip(m, 4)
        assert layer.nnz == (1 if density < 1 else shape[0] * shape[1])


def test_layer_without_kept_weights():
    m = CompressedMatrix.from_dense(np.zeros((4, 40), bool), np.zeros((4, 40), int), [0.5], bits=2)
    layer = check_round_trip(m, 3)
    assert layer.nnz == 0 and layer.codes.total_bits == 0


def test_one_code_in_use_costs_one_bit_per_weight():
    m = random_compressed_matrix(20, 30, 0.5, 4, seed=3, codebook_size=1)
    layer = check_round_trip(m, 5)
    assert layer.codes.total_bits == m.nnz


def test_huffman_saves_bits_on_skewed_codes():
    # Trained codebooks are used unevenly (peaked weight distributions); Huffman exploits it.
    m = random_compressed_matrix(256, 1024, 0.1, 5, seed=0)
    rng = np.random.default_rng(0)
    codes = np.clip(np.round(rng.normal(16, 3, size=m.nnz)), 0, 31).astype(np.uint8)
    skewed = CompressedMatrix(m.shape, m.codebook, m.row_ptr, m.col_idx, codes, m.bits)
    layer = check_round_trip(skewed, 5)
    p = np.bincount(codes) / m.nnz
    entropy = -np.sum(p[p > 0] * np.log2(p[p > 0]))
    assert entropy * m.nnz <= layer.codes.total_bits <= (entropy + 0.05) * m.nnz
    assert layer.codes.total_bits < 0.8 * m.nnz * m.bits


def test_relative_layer_input_and_errors():
    m = random_compressed_matrix(5, 50, 0.2, 3, seed=1)
    relative = encode_relative(m, 4)
    assert decode_huffman(encode_huffman(relative)).equals(m)
    with pytest.raises(ValueError, match="index_bits=5 but the layer is encoded with 4"):
        encode_huffman(relative, 5)
    with pytest.raises(TypeError, match="index_bits is required"):
        encode_huffman(m)
    with pytest.raises(TypeError, match="CompressedMatrix or RelativeIndexLayer"):
        encode_huffman(m.to_dense(), 4)
    layer = encode_huffman(m, 4)
    other = encode_huffman(random_compressed_matrix(5, 50, 0.5, 3, seed=2), 4)
    mixed = HuffmanLayer(m.shape, 3, 4, m.codebook, layer.row_ptr, layer.z, other.codes)
    with pytest.raises(ValueError, match="real entries but the codes stream has"):
        decode_huffman(mixed)
