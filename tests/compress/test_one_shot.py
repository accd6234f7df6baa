import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import (
    CompressedMatrix,
    ConfigError,
    EmptyLayerError,
    NonFiniteWeightError,
    compress_matrix,
    nearest_centroid,
)


def test_prunes_to_the_density_and_shares_the_kept_weights():
    weight = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    m = compress_matrix(weight, density=0.25, bits=4)
    assert isinstance(m, CompressedMatrix)
    assert m.shape == (64, 48) and m.bits == 4 and m.nnz == round(0.25 * 64 * 48)
    kept = m.mask()
    # The largest magnitudes are kept.
    assert np.abs(weight.numpy()[kept]).min() >= np.abs(weight.numpy()[~kept]).max()
    # Every kept weight decodes to its nearest centroid.
    assert np.array_equal(m.codes, nearest_centroid(weight.numpy()[kept], m.codebook))
    assert np.all(m.to_dense()[~kept] == 0)


def test_quality_rule():
    weight = torch.randn(50, 40, generator=torch.Generator().manual_seed(1))
    m = compress_matrix(weight, quality=1.0, bits=3)
    threshold = float(weight.std())
    assert m.nnz == int((weight.abs() > threshold).sum())


def test_conv_weight_is_flattened_per_output_channel():
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(2))
    m = compress_matrix(weight, density=0.5, bits=2)
    assert m.shape == (8, 27)


def test_numpy_input_and_default_density_keeps_everything():
    weight = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    m = compress_matrix(weight, bits=8)
    assert m.nnz == 35


def test_deterministic():
    weight = torch.randn(40, 30, generator=torch.Generator().manual_seed(3))
    a = compress_matrix(weight, density=0.3, bits=3, init="random", seed=5)
    b = compress_matrix(weight, density=0.3, bits=3, init="random", seed=5)
    assert a.equals(b)


def test_constant_layer_is_exact():
    m = compress_matrix(torch.full((4, 6), 0.5), density=0.5, bits=2)
    assert m.codebook.tolist() == [0.5] and m.nnz == 12


def test_bad_inputs():
    weight = torch.randn(4, 4)
    with pytest.raises(ConfigError, match="density"):
        compress_matrix(weight, density=0.0)
    with pytest.raises(ConfigError, match="density"):
        compress_matrix(weight, density=1.5)
    with pytest.raises(ValueError, match="bits"):
        compress_matrix(weight, density=0.5, bits=9)
    with pytest.raises(ConfigError, match="not both"):
        compress_matrix(weight, density=0.5, quality=1.0)
    with pytest.raises(ValueError, match="2-D"):
        compress_matrix(torch.randn(5), density=0.5)
    with pytest.raises(EmptyLayerError, match="'w'"):
        compress_matrix(torch.zeros(0, 4), density=0.5, name="w")
    with pytest.raises(EmptyLayerError, match="prunes every weight"):
        compress_matrix(weight, quality=100.0)
    nan = weight.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(NonFiniteWeightError, match="'fc1'"):
        compress_matrix(nan, density=0.5, name="fc1")


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 20),
    cols=st.integers(1, 40),
    density=st.floats(0.01, 1.0),
    bits=st.integers(1, 8),
    seed=st.integers(0, 1000),
)
def test_round_trip_through_the_canonical_form(rows, cols, density, bits, seed):
    weight = np.random.default_rng(seed).normal(size=(rows, cols)).astype(np.float32)
    m = compress_matrix(weight, density=density, bits=bits, seed=seed)
    rebuilt = CompressedMatrix.from_dense(m.mask(), m.dense_codes(), m.codebook, bits)
    assert rebuilt.equals(m)
    assert m.nnz == min(rows * cols, max(1, round(density * rows * cols)))
    assert m.codebook.size <= 2**bits
