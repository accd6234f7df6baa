import numpy as np
import pytest
import torch

from compress import (
    CompressedMatrix,
    ConfigError,
    LayerConfig,
    SingularHessianError,
    compress_calibrated_layer,
    compress_matrix,
    kmeans_1d,
    nearest_centroid,
)
from compress.obs import (
    inverse_hessian_factor,
    obs_prune,
    obs_quantize,
    output_error,
    refit_codebook,
    wanda_mask,
)


def correlated_layer(rows=48, cols=64, samples=400, seed=0):
    """A weight and the Hessian of inputs with correlated features of very different scales
    (as activations of trained networks have), where calibration matters."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=g)
    mixing = torch.randn(cols, cols, generator=g) / cols**0.5
    scales = torch.exp(torch.randn(cols, generator=g))
    inputs = (
        torch.randn(samples, cols, generator=g) @ mixing + 0.2 * torch.randn(samples, cols, generator=g)
    ) * scales
    return weight, inputs.T @ inputs


def test_obs_pruning_beats_magnitude_at_the_same_density():
    weight, hessian = correlated_layer()
    for density in (0.3, 0.5, 0.7):
        count = round(density * weight.numel())
        factor, _ = inverse_hessian_factor(hessian, 0.01)
        pruned, mask = obs_prune(weight, factor, count, block_size=16)
        assert int(mask.sum()) == count
        assert bool((pruned[~mask] == 0).all())
        magnitude = torch.from_numpy(compress_matrix(weight, density=density, bits=8).mask())
        obs_error = output_error(weight, pruned, hessian)
        magnitude_error = output_error(weight, weight * magnitude, hessian)
        assert obs_error < 0.8 * magnitude_error, (density, obs_error, magnitude_error)


def test_wanda_keeps_the_count_spread_over_rows_by_weight_times_input_norm():
    weight, hessian = correlated_layer()
    mask = wanda_mask(weight, hessian.diagonal(), 1000)
    assert int(mask.sum()) == 1000
    per_row = mask.sum(1)
    assert int(per_row.max() - per_row.min()) <= 1
    score = weight.abs() * hessian.diagonal().sqrt()
    for row in range(weight.shape[0]):
        assert score[row][mask[row]].min() >= score[row][~mask[row]].max()
    magnitude = torch.from_numpy(compress_matrix(weight, density=1000 / weight.numel(), bits=8).mask())
    assert output_error(weight, weight * mask, hessian) < output_error(weight, weight * magnitude, hessian)


@pytest.mark.parametrize("density", [1.0, 0.5])
def test_error_compensated_quantization_beats_nearest_centroid_rounding_to_the_same_codebook(density):
    weight, hessian = correlated_layer(seed=1)
    mask = torch.from_numpy(compress_matrix(weight, density=density, bits=8).mask())
    codebook = torch.from_numpy(kmeans_1d(weight[mask].numpy(), 3).codebook)
    factor, _ = inverse_hessian_factor(hessian, 0.01)
    codes = obs_quantize(weight, factor, mask, codebook, block_size=8)
    compensated = codebook[codes] * mask
    plain = torch.from_numpy(
        CompressedMatrix.quantize(weight.numpy(), mask.numpy(), codebook.numpy()).to_dense()
    )
    # With pruning, part of the error is the pruned weights', which both compensate alike.
    margin = 0.9 if density == 1.0 else 0.95
    assert output_error(weight, compensated, hessian) < margin * output_error(weight, plain, hessian)
    # The codes of pruned positions are 0 and the decoded pruned weights exactly zero.
    assert bool((codes[~mask] == 0).all()) and bool((compensated[~mask] == 0).all())


def test_codebook_refit_lowers_the_error_with_the_codes_fixed_and_solves_the_normal_equations():
    weight, hessian = correlated_layer(seed=2)
    mask = torch.from_numpy(compress_matrix(weight, density=0.6, bits=8).mask())
    codebook = torch.from_numpy(kmeans_1d(weight[mask].numpy(), 3).codebook)
    codes = torch.from_numpy(nearest_centroid(weight.numpy(), codebook.numpy()).astype(np.int64)) * mask
    refit = refit_codebook(weight, hessian, mask, codes, codebook)
    before = output_error(weight, codebook[codes] * mask, hessian)
    after = output_error(weight, refit[codes] * mask, hessian)
    assert after < before
    # The normal equations hold: the error is orthogonal to every code's indicator.
    residual = (weight - refit[codes] * mask) @ hessian
    gradient = torch.zeros(codebook.numel()).index_add_(0, codes[mask], residual[mask])
    assert float(gradient.abs().max()) < 1e-3 * float(
        ((weight @ hessian)[mask]).abs().sum() / codebook.numel()
    )


@pytest.mark.parametrize("pruning", ["magnitude", "wanda", "obs"])
@pytest.mark.parametrize("quantization", ["kmeans", "weighted-kmeans", "obs"])
def test_every_method_gives_a_canonical_layer_of_the_density_and_bits(pruning, quantization):
    weight, hessian = correlated_layer(rows=24, cols=32)
    settings = LayerConfig(density=0.4, bits=3, pruning=pruning, quantization=quantization, block_size=8)
    layer = compress_calibrated_layer(weight, hessian, settings, name="fc")
    matrix = layer.matrix
    assert matrix.shape == (24, 32) and matrix.bits == 3 and matrix.nnz == round(0.4 * 24 * 32)
    assert matrix.codebook.size <= 8 and np.all(np.bincount(matrix.codes, minlength=matrix.codebook.size) > 0)
    assert layer.error == pytest.approx(output_error(weight, matrix.to_dense_tensor(), hessian), rel=1e-5)
    assert layer.error_pruned > 0 and 0 < layer.error < 1


def test_magnitude_and_kmeans_give_exactly_the_data_free_layer():
    weight, hessian = correlated_layer(rows=24, cols=32)
    for settings, kwargs in (
        (LayerConfig(density=0.3, bits=4), {"density": 0.3}),
        (LayerConfig(quality=0.8, bits=4), {"quality": 0.8}),
    ):
        layer = compress_calibrated_layer(weight, hessian, settings)
        assert layer.matrix.equals(compress_matrix(weight, bits=4, form="auto", **kwargs))


def test_quality_sets_the_count_for_calibrated_pruning():
    weight, hessian = correlated_layer(rows=24, cols=32)
    expected = int((weight.abs() > weight.std()).sum())
    layer = compress_calibrated_layer(weight, hessian, LayerConfig(quality=1.0, bits=4, pruning="obs"))
    assert layer.matrix.nnz == expected


def test_calibrated_compression_is_deterministic_for_a_seed():
    weight, hessian = correlated_layer(rows=24, cols=32)
    settings = LayerConfig(
        density=0.5, bits=3, pruning="obs", quantization="obs", init="random", block_size=8
    )
    first = compress_calibrated_layer(weight, hessian, settings)
    again = compress_calibrated_layer(weight.clone(), hessian.clone(), settings)
    assert first.matrix.equals(again.matrix) and first.error == again.error


def test_a_conv_weight_is_compressed_as_its_flattened_matrix():
    weight = torch.randn(6, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    inputs = torch.randn(100, 18, generator=torch.Generator().manual_seed(1))
    layer = compress_calibrated_layer(
        weight, inputs.T @ inputs, LayerConfig(density=0.5, bits=2, pruning="obs")
    )
    assert layer.matrix.shape == (6, 18)


def test_bad_hessians_are_refused_naming_the_layer():
    weight, hessian = correlated_layer(rows=8, cols=16)
    settings = LayerConfig(density=0.5, bits=2, pruning="obs")
    with pytest.raises(ValueError, match=r"'fc'.*shape \(15, 15\).*16 input features"):
        compress_calibrated_layer(weight, hessian[:15, :15], settings, name="fc")
    bad = hessian.clone()
    bad[3, 4] = float("nan")
    with pytest.raises(SingularHessianError, match=r"'fc'.*NaN or inf"):
        compress_calibrated_layer(weight, bad, settings, name="fc")
    with pytest.raises(SingularHessianError, match=r"'fc'.*every calibration input of the layer is zero"):
        compress_calibrated_layer(weight, torch.zeros(16, 16), settings, name="fc")
    with pytest.raises(TypeError, match=r"'fc'.*torch.Tensor"):
        compress_calibrated_layer(weight, hessian.numpy(), settings, name="fc")


def test_a_rank_deficient_hessian_without_damping_falls_back_to_more_damping():
    weight, _ = correlated_layer(rows=8, cols=16)
    inputs = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))  # rank 4 of 16
    settings = LayerConfig(density=0.5, bits=2, pruning="obs", damping=0.0)
    layer = compress_calibrated_layer(weight, inputs.T @ inputs, settings, name="fc")
    assert layer.damping > 0 and layer.matrix.nnz == 64


def test_an_indefinite_hessian_is_refused_after_the_fallbacks():
    hessian = torch.tensor([[1.0, 5.0], [5.0, 1.0]])  # eigenvalues 6 and -4
    with pytest.raises(SingularHessianError, match=r"'fc'.*not positive definite"):
        inverse_hessian_factor(hessian, 0.01, "fc")


def test_block_size_is_checked():
    weight, hessian = correlated_layer(rows=8, cols=16)
    factor, _ = inverse_hessian_factor(hessian, 0.01)
    with pytest.raises(ConfigError, match="block_size"):
        obs_prune(weight, factor, 10, block_size=0)
