import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import ConfigError, EmptyLayerError, NonFiniteWeightError, kmeans, kmeans_1d, nearest_centroid
from compress.kmeans import INITS


def _naive_lloyd_step(values, centroids):
    codes = nearest_centroid(values, centroids.astype(np.float32))
    return np.array([values[codes == j].mean() if np.any(codes == j) else c for j, c in enumerate(centroids)])


@pytest.mark.parametrize("init", INITS)
def test_result_is_a_lloyd_fixed_point(init):
    values = np.random.default_rng(1).normal(0, 0.1, 5000).astype(np.float32)
    result = kmeans_1d(values, 3, init=init, seed=4)
    assert result.converged
    assert result.codebook.dtype == np.float32 and result.codes.dtype == np.uint8
    assert np.all(np.diff(result.codebook) > 0)
    # Every centroid is the mean of its cluster and every value sits at its nearest centroid.
    assert np.array_equal(result.codes, nearest_centroid(values, result.codebook))
    means = np.array(
        [values[result.codes == j].astype(np.float64).mean() for j in range(result.codebook.size)]
    )
    np.testing.assert_allclose(result.codebook, means, atol=1e-5)
    expected = float(np.sum((values.astype(np.float64) - result.codebook[result.codes]) ** 2))
    assert result.inertia == pytest.approx(expected, rel=1e-9)


def test_matches_a_naive_implementation_step_for_step():
    values = np.random.default_rng(2).uniform(-1, 1, 2000).astype(np.float32)
    one = kmeans_1d(values, 2, init="linear", max_iter=1)
    naive = _naive_lloyd_step(values, np.linspace(values.min(), values.max(), 4, dtype=np.float64))
    np.testing.assert_allclose(np.sort(one.codebook), np.sort(naive).astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize("init", INITS)
def test_deterministic_for_a_seed(init):
    values = np.random.default_rng(3).standard_t(3, 3000).astype(np.float32)
    a = kmeans_1d(values, 4, init=init, seed=7)
    b = kmeans_1d(values, 4, init=init, seed=7)
    assert np.array_equal(a.codebook, b.codebook) and np.array_equal(a.codes, b.codes)


def test_random_init_depends_on_the_seed():
    values = np.random.default_rng(3).standard_t(3, 3000).astype(np.float32)
    results = {kmeans_1d(values, 4, init="random", seed=s, max_iter=0).codebook.tobytes() for s in range(5)}
    assert len(results) > 1


def test_more_bits_never_fit_worse():
    values = np.random.default_rng(5).normal(size=20000).astype(np.float32)
    inertias = [kmeans_1d(values, bits).inertia for bits in range(1, 9)]
    assert all(a > b for a, b in itertools.pairwise(inertias))


def test_fewer_distinct_values_than_clusters_are_kept_exactly():
    values = np.array([0.5, -1.0, 0.5, 2.0, -1.0], dtype=np.float32)
    result = kmeans_1d(values, 3)
    assert result.codebook.tolist() == [-1.0, 0.5, 2.0]
    assert np.array_equal(result.codebook[result.codes], values)
    assert result.inertia == 0.0


def test_constant_layer_gives_a_one_entry_codebook():
    result = kmeans_1d(np.full(100, 0.25, np.float32), 5)
    assert result.codebook.tolist() == [0.25]
    assert not result.codes.any()


def test_empty_clusters_are_relocated():
    # Two far apart groups (pruned weights): the linear init puts centroids in the empty gap.
    values = np.concatenate((np.linspace(-1.0, -0.9, 50), np.linspace(0.9, 1.0, 50))).astype(np.float32)
    result = kmeans_1d(values, 4)
    assert result.codebook.size == 16
    assert np.all(np.abs(result.codebook) >= 0.9)


def test_unused_centroids_are_dropped():
    values = np.concatenate((np.linspace(-1.0, -0.9, 50), np.linspace(0.9, 1.0, 50))).astype(np.float32)
    result = kmeans_1d(values, 4, max_iter=0)  # the linear init alone, gap centroids unused
    assert result.codebook.size < 16
    assert np.all(np.bincount(result.codes, minlength=result.codebook.size) > 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_layer(bad):
    values = np.ones(10, np.float32)
    values[3] = bad
    with pytest.raises(NonFiniteWeightError, match=r"'fc1'.*1 of 10"):
        kmeans_1d(values, 2, name="fc1")


def test_empty_input():
    with pytest.raises(EmptyLayerError, match="'fc2'"):
        kmeans_1d(np.zeros(0, np.float32), 2, name="fc2")


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match="bits"):
        kmeans_1d(np.ones(4, np.float32), bits)


def test_unknown_init():
    with pytest.raises(ValueError, match="init"):
        kmeans_1d(np.arange(4, dtype=np.float32), 1, init="kmeans++")


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, width=32), min_size=1, max_size=300),
    bits=st.integers(1, 8),
    init=st.sampled_from(INITS),
)
def test_codes_address_the_nearest_used_centroid(values, bits, init):
    values = np.array(values, dtype=np.float32)
    result = kmeans_1d(values, bits, init=init)
    assert 1 <= result.codebook.size <= 2**bits
    assert result.codes.max() < result.codebook.size
    assert np.array_equal(result.codes, nearest_centroid(values, result.codebook))
    assert np.all(np.bincount(result.codes, minlength=result.codebook.size) > 0)


@pytest.fixture
def histogram_path(monkeypatch):
    """Send layers above 256 values through the histogram path, with few bins (so that bins
    hold several midpoints and many values) and small chunks."""
    monkeypatch.setattr(kmeans, "_EXACT_MAX", 256)
    monkeypatch.setattr(kmeans, "_BINS", 64)
    monkeypatch.setattr(kmeans, "_CHUNK", 1000)


def _assert_lloyd_fixed_point(values, result, atol):
    assert np.array_equal(result.codes, nearest_centroid(values, result.codebook))
    means = [values[result.codes == j].astype(np.float64).mean() for j in range(result.codebook.size)]
    np.testing.assert_allclose(result.codebook, means, atol=atol)
    expected = float(np.sum((values.astype(np.float64) - result.codebook[result.codes]) ** 2))
    assert result.inertia == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("init", INITS)
def test_histogram_path_reaches_an_exact_fixed_point(histogram_path, init):
    values = np.random.default_rng(6).normal(0, 0.1, 5000).astype(np.float32)
    result = kmeans_1d(values, 3, init=init, seed=2, tol=0.0)
    assert result.converged and result.codebook.size == 8
    _assert_lloyd_fixed_point(values, result, atol=1e-6)


def _pruned(rng, n):
    weights = rng.normal(0, 0.05, 4 * n)
    return weights[np.abs(weights) > np.quantile(np.abs(weights), 0.75)][:n]


@pytest.mark.parametrize("bits", [5, 8])
@pytest.mark.parametrize(
    "draw",
    [lambda r, n: r.normal(0, 0.05, n), lambda r, n: r.laplace(0, 0.05, n), _pruned],
    ids=["normal", "laplace", "pruned"],
)
def test_histogram_path_fits_as_well_as_exact_lloyd(monkeypatch, bits, draw):
    values = draw(np.random.default_rng(bits), 200_000).astype(np.float32)
    exact = kmeans_1d(values, bits)  # sorted values, plain Lloyd
    monkeypatch.setattr(kmeans, "_EXACT_MAX", 1 << 16)
    binned = kmeans_1d(values, bits)  # histogram with Newton steps, then exact Lloyd
    assert binned.converged and binned.codebook.size == 2**bits
    assert binned.inertia <= exact.inertia * 1.001
    _assert_lloyd_fixed_point(values, binned, atol=1e-4)


@pytest.mark.parametrize("init", INITS)
def test_histogram_path_is_deterministic_for_a_seed(histogram_path, init):
    values = np.random.default_rng(3).standard_t(3, 3000).astype(np.float32)
    a = kmeans_1d(values, 4, init=init, seed=7)
    b = kmeans_1d(values, 4, init=init, seed=7)
    assert np.array_equal(a.codebook, b.codebook) and np.array_equal(a.codes, b.codes)
    assert a.iterations == b.iterations and a.inertia == b.inertia


def test_histogram_path_random_init_depends_on_the_seed(histogram_path):
    values = np.random.default_rng(3).standard_t(3, 3000).astype(np.float32)
    results = {kmeans_1d(values, 4, init="random", seed=s, max_iter=0).codebook.tobytes() for s in range(5)}
    assert len(results) > 1


def test_histogram_path_keeps_few_distinct_values_exactly(histogram_path):
    values = np.random.default_rng(4).choice(np.float32([-2.5, -0.125, 0.0, 0.1, 7.0]), 2000)
    result = kmeans_1d(values, 3)
    assert result.codebook.tolist() == sorted(set(values.tolist()))
    assert np.array_equal(result.codebook[result.codes], values)
    assert result.inertia == 0.0 and result.iterations == 0


def test_histogram_path_splits_a_bin_of_many_distinct_values(histogram_path):
    # Two occupied bins (at most 2**bits) but many distinct values: a real clustering is needed,
    # and the exact phase must split values that share one bin.
    rng = np.random.default_rng(5)
    values = np.concatenate((rng.uniform(0, 1e-3, 1000), [1.0, 1.0])).astype(np.float32)
    result = kmeans_1d(values, 2, tol=0.0)
    assert result.codebook.size == 4
    _assert_lloyd_fixed_point(values, result, atol=1e-6)


def test_histogram_path_relocates_empty_clusters(histogram_path):
    values = np.concatenate((np.linspace(-1.0, -0.9, 500), np.linspace(0.9, 1.0, 500))).astype(np.float32)
    result = kmeans_1d(values, 4)
    assert result.codebook.size == 16
    assert np.all(np.abs(result.codebook) >= 0.9)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, width=32), min_size=257, max_size=600),
    bits=st.integers(1, 8),
    init=st.sampled_from(INITS),
)
def test_histogram_path_codes_address_the_nearest_used_centroid(values, bits, init):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kmeans, "_EXACT_MAX", 256)
        patch.setattr(kmeans, "_BINS", 64)
        patch.setattr(kmeans, "_CHUNK", 100)
        values = np.array(values, dtype=np.float32)
        result = kmeans_1d(values, bits, init=init)
    assert 1 <= result.codebook.size <= 2**bits
    assert np.all(np.diff(result.codebook) > 0)
    assert np.array_equal(result.codes, nearest_centroid(values, result.codebook))
    assert np.all(np.bincount(result.codes, minlength=result.codebook.size) > 0)
    if np.unique(values).size <= 2**bits:
        assert np.array_equal(result.codebook[result.codes], values)


def test_weighted_kmeans_with_equal_weights_is_plain_kmeans():
    values = np.random.default_rng(0).normal(size=5000).astype(np.float32)
    for init in ("linear", "density", "random"):
        plain = kmeans_1d(values, 4, init=init, seed=2)
        weighted = kmeans_1d(values, 4, init=init, seed=2, weights=np.full(values.size, 3.0))
        assert np.allclose(plain.codebook, weighted.codebook, atol=1e-6) and np.array_equal(
            plain.codes, weighted.codes
        )
        assert weighted.inertia == pytest.approx(3 * plain.inertia, rel=1e-6)


def test_weighted_kmeans_pulls_centroids_to_heavy_values_and_minimizes_the_weighted_error():
    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, 4000).astype(np.float32)
    weights = np.where(values > 0.5, 100.0, 1.0)
    weighted = kmeans_1d(values, 3, weights=weights)
    plain = kmeans_1d(values, 3)
    assert np.count_nonzero(weighted.codebook > 0.5) > np.count_nonzero(plain.codebook > 0.5)

    def weighted_error(result):
        return float(np.sum(weights * (values - result.codebook[result.codes]) ** 2))

    assert weighted_error(weighted) < weighted_error(plain)
    assert weighted.inertia == pytest.approx(weighted_error(weighted), rel=1e-4)


def test_weighted_kmeans_takes_the_exact_path_on_large_layers_too():
    values = np.random.default_rng(2).normal(size=(1 << 20) + 10).astype(np.float32)
    result = kmeans_1d(values, 2, weights=np.ones(values.size))
    assert result.codes.size == values.size and result.codebook.size == 4


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        (np.ones(3), ValueError, "3 k-means weights for 4 values"),
        (np.array([1.0, -1.0, 1.0, 1.0]), ConfigError, "finite, >= 0 and not all zero"),
        (np.zeros(4), ConfigError, "not all zero"),
        (np.array([1.0, np.nan, 1.0, 1.0]), ConfigError, "finite"),
    ],
)
def test_bad_kmeans_weights_are_refused(weights, error, message):
    with pytest.raises(error, match=message):
        kmeans_1d(np.arange(4, dtype=np.float32), 1, weights=weights, name="fc")
