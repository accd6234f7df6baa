"""The benchmark layers (EIE paper, Table III), the LLM layers and the inputs EIE is simulated on."""

import numpy as np
import pytest

from workloads import (
    BENCHMARKS,
    LLM_LAYERS,
    PAPER_LAYERS,
    LayerSpec,
    benchmark_activations,
    benchmark_inputs,
    get_layer,
)


def test_the_papers_nine_layers():
    assert BENCHMARKS == ("alex6", "alex7", "alex8", "vgg6", "vgg7", "vgg8", "nt-we", "nt-wd", "nt-lstm")
    vgg6 = PAPER_LAYERS["vgg6"]
    assert (vgg6.inputs, vgg6.outputs) == (25088, 4096)
    assert (vgg6.weight_density, vgg6.activation_density) == (0.04, 0.183)
    assert vgg6.weights == 25088 * 4096
    assert all(0 < s.weight_density <= 1 and 0 < s.activation_density <= 1 for s in PAPER_LAYERS.values())
    assert len(LLM_LAYERS) == 6 and LLM_LAYERS["llm-4096x14336-d30"].outputs == 14336


def test_get_layer_finds_both_registries_case_insensitively():
    assert get_layer("Alex7") is PAPER_LAYERS["alex7"]
    assert get_layer("llm-14336x4096-d10") is LLM_LAYERS["llm-14336x4096-d10"]
    with pytest.raises(KeyError, match="unknown layer 'alex9'; known layers: alex6, alex7"):
        get_layer("alex9")


def test_random_matrix_has_the_specs_shape_and_density():
    spec = LayerSpec("small", inputs=50, outputs=20, weight_density=0.2)
    matrix = spec.random_matrix(bits=3, seed=1)
    assert matrix.shape == (20, 50) and matrix.nnz == 200 and matrix.bits == 3
    assert matrix.equals(spec.random_matrix(bits=3, seed=1))
    assert spec.activation_density == 1.0


def test_benchmark_activations_exact_nonzeros():
    acts = benchmark_activations(1000, 0.351, seed=2)
    assert acts.dtype == np.float32 and acts.shape == (1000,)
    assert np.count_nonzero(acts) == 351 and np.all(acts >= 0)
    assert np.array_equal(acts, benchmark_activations(1000, 0.351, seed=2))
    assert not np.array_equal(acts, benchmark_activations(1000, 0.351, seed=3))
    assert np.count_nonzero(benchmark_activations(3, 1e-6)) == 1  # at least one
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        benchmark_activations(0, 0.5)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\], got 0"):
        benchmark_activations(10, 0)


def test_benchmark_inputs_scale_and_codebook():
    matrix, acts = benchmark_inputs("ALEX8", weight_bits=4, seed=1, scale=0.1)
    assert matrix.shape == (100, 410) and acts.shape == (410,)
    assert matrix.codebook.size == 15  # EIE's non-zero weights: 2**4 - 1
    assert matrix.density == pytest.approx(0.25, abs=1e-4)
    assert np.count_nonzero(acts) == round(0.375 * 410)
    again, _ = benchmark_inputs("alex8", weight_bits=4, seed=1, scale=0.1)
    assert matrix.equals(again)
    with pytest.raises(ValueError, match="unknown benchmark 'alex9'; choose one of alex6"):
        benchmark_inputs("alex9")
    with pytest.raises(ValueError, match=r"scale must be in \(0, 1\], got 0"):
        benchmark_inputs("alex8", scale=0)
