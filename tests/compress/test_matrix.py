import numpy as np
import pytest
import torch
from hypothesis import given, settings

from compress import CompressedMatrix, nearest_centroid
from tests.helpers import random_layers
from workloads import random_compressed_matrix


def random_layer(draw_shape, density, bits, seed):
    rows, cols = draw_shape
    return random_compressed_matrix(rows, cols, density, bits, seed=seed)


@settings(max_examples=60, deadline=None)
@given(m=random_layers(max_cols=40))
def test_dense_round_trip(m):
    rebuilt = CompressedMatrix.from_dense(m.mask(), m.dense_codes(), m.codebook, m.bits)
    assert rebuilt.equals(m)
    dense = m.to_dense()
    assert np.count_nonzero(m.mask()) == m.nnz
    np.testing.assert_array_equal(dense[m.mask()], m.values)
    assert np.all(dense[~m.mask()] == 0)
    assert m.density == pytest.approx(m.nnz / (m.out_features * m.in_features))


def test_properties_and_tensor():
    mask = np.array([[1, 0, 1], [0, 0, 0]], dtype=bool)
    codes = np.array([[2, 0, 1], [0, 0, 0]])
    m = CompressedMatrix.from_dense(mask, codes, [0.5, -1.0, 2.0], bits=2)
    assert m.shape == (2, 3) and m.nnz == 2 and m.bits == 2
    assert m.row_ptr.tolist() == [0, 2, 2]
    assert m.col_idx.tolist() == [0, 2]
    assert m.codes.tolist() == [2, 1]
    t = m.to_dense_tensor(torch.float16)
    assert t.dtype == torch.float16
    assert t.tolist() == [[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]]


def test_quantize_assigns_nearest_centroid():
    weight = np.array([[0.1, -0.9, 0.0, 0.55]], dtype=np.float32)
    mask = weight != 0
    m = CompressedMatrix.quantize(weight, mask, [-1.0, 0.0, 0.5, 1.0], bits=2)
    assert m.codes.tolist() == [1, 0, 2]
    assert nearest_centroid(np.array([0.25]), np.array([0.0, 0.5])).tolist() == [0]


def test_empty_layer_is_allowed():
    m = CompressedMatrix.from_dense(np.zeros((3, 4), bool), np.zeros((3, 4)), [0.0], bits=1)
    assert m.nnz == 0 and m.density == 0.0
    assert not m.to_dense().any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"codebook": np.zeros(5, np.float32), "bits": 2}, "codebook must be 1-D with 1..4"),
        ({"codebook": np.array([np.nan], np.float32)}, "NaN"),
        ({"bits": 9}, "bits must be in 1..8"),
        ({"bits": 0}, "bits must be in 1..8"),
        ({"row_ptr": np.array([0, 3, 2])}, "non-decreasing"),
        ({"col_idx": np.array([0, 5])}, "col_idx must lie in"),
        ({"col_idx": np.array([2, 1])}, "strictly increasing"),
        ({"codes": np.array([0, 3])}, "codes must lie in"),
        ({"row_ptr": np.array([0, 1])}, r"out_features \+ 1"),
        ({"shape": (0, 3)}, "shape must be"),
    ],
)
def test_invalid_construction(kwargs, message):
    args = {
        "shape": (2, 3),
        "codebook": np.array([0.1, 0.2], np.float32),
        "row_ptr": np.array([0, 2, 2]),
        "col_idx": np.array([0, 2]),
        "codes": np.array([0, 1]),
        "bits": 1,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        CompressedMatrix(**args)


def test_arrays_are_read_only():
    m = random_compressed_matrix(4, 4, 0.5, 2)
    with pytest.raises(ValueError):
        m.codes[0] = 1
