"""The digits workload: EIE on the network's real activations, the shared training pipeline and
its schedule (the data needs scikit-learn: the examples extra)."""

import importlib.util

import numpy as np
import pytest

from compress import DeepCompressionConfig
from eie_model import EIEConfig, simulate_layer
from tests.eie_model.test_simulator import _reference
from workloads import simulate_digits
from workloads.digits import DEMO_SCHEDULE, Schedule, compress_digits, digits_workload, load_digits_split

needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="the digits data needs scikit-learn (the examples extra)",
)


@needs_sklearn
def test_real_activations_through_eie():
    workload = digits_workload(image=3)
    assert [layer.name for layer in workload.layers] == ["fc1", "fc2", "fc3"]
    assert workload.accuracy > 80.0
    for layer in workload.layers:
        assert layer.matrix.codebook.size <= 15
        assert layer.activations.shape == (layer.matrix.in_features,)
        assert np.all(layer.activations >= 0)  # pixels, then ReLU outputs
        result = simulate_layer(layer.matrix, layer.activations, EIEConfig(pes=8))
        assert np.array_equal(
            result.output.codes, _reference(layer.matrix, layer.activations, result.output.fmt)
        )
        assert result.broadcasts == int(np.count_nonzero(layer.activations))
    # ReLU leaves real zeros for the LNZD to skip in the hidden layers.
    assert np.count_nonzero(workload.layers[1].activations) < workload.layers[1].activations.size


@needs_sklearn
def test_simulate_digits_runs_the_workload_layers():
    config = EIEConfig(pes=4)
    results = simulate_digits(config, image=5)
    workload = digits_workload(config.weight_bits, image=5)
    assert [r.name for r in results] == ["digits:fc1", "digits:fc2", "digits:fc3"]
    for result, layer in zip(results, workload.layers):
        expected = simulate_layer(layer.matrix, layer.activations, config)
        assert result.cycles == expected.cycles and result.output_checksum == expected.output_checksum


@needs_sklearn
def test_image_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"image must be in 0\.\.449, got 450"):
        digits_workload(image=450)


@needs_sklearn
def test_compress_digits_is_deterministic_and_keeps_the_configured_densities():
    split = load_digits_split()
    config = DeepCompressionConfig(density=0.1, bits=3, layers={"fc3": {"density": 0.5}}, prune_stages=2)
    short = Schedule({"dense": 1, "retrain": 1, "finetune": 1}, DEMO_SCHEDULE.learning_rates, 7, 9)
    lines = []
    first = compress_digits(split, config, short, seed=4, log=lines.append)
    again = compress_digits(split, config, short, seed=4)
    assert sorted(first.layers) == ["fc1", "fc2", "fc3"]
    assert all(first.layers[name].equals(again.layers[name]) for name in first.layers)
    assert first.compressed_accuracy == again.compressed_accuracy
    assert first.layers["fc2"].density == pytest.approx(0.1, abs=1e-3)
    assert first.layers["fc3"].density == pytest.approx(0.5, abs=1e-2)
    assert all(first.layers[name].codebook.size <= 8 for name in first.layers)
    # The recorded weights: dense everywhere, then pruned to the layer's density.
    assert np.count_nonzero(first.dense_weights["fc2"]) == 30000
    assert np.count_nonzero(first.pruned_weights["fc2"]) == first.layers["fc2"].nnz
    phases = ["dense", "pruning stage 1/2", "pruning stage 2/2", "weight sharing"]
    assert [line.split(":")[0] for line in lines] == [f"[seed 4] {phase}" for phase in phases]


def test_schedule_scaling_and_validation():
    quick = DEMO_SCHEDULE.scaled(0.1)
    assert dict(quick.epochs) == {"dense": 4, "retrain": 2, "finetune": 2}
    assert dict(DEMO_SCHEDULE.scaled(0.001).epochs) == {"dense": 1, "retrain": 1, "finetune": 1}
    rates = DEMO_SCHEDULE.learning_rates
    with pytest.raises(ValueError, match="epochs must have exactly the phases"):
        Schedule({"dense": 1, "retrain": 1}, rates, 1, 1)
    with pytest.raises(ValueError, match=r"epochs\['retrain'\] must be an int >= 1, got 0"):
        Schedule({"dense": 1, "retrain": 0, "finetune": 1}, rates, 1, 1)
    with pytest.raises(ValueError, match=r"learning_rates\['dense'\] must be a positive number, got nan"):
        Schedule(DEMO_SCHEDULE.epochs, {**rates, "dense": float("nan")}, 1, 1)
    with pytest.raises(ValueError, match="the epoch scale must be > 0, got 0"):
        DEMO_SCHEDULE.scaled(0)
