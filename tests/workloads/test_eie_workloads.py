"""EIE workloads from measured statistics: the presets, the generator and the measurement."""

import numpy as np
import pytest

from eie_model import read_eie_dump
from tests.eie_dump import DUMP, needs_dump
from workloads import WORKLOADS, WorkloadStats, benchmark_inputs, measure_workload_stats, workload_inputs
from workloads.eie import sweep_inputs
from workloads.eie_workloads import get_workload, stats_activations, stats_matrix

FC8 = WORKLOADS["fc8-stats"]


def test_uniform_preset_is_the_uniform_generator():
    matrix, acts = workload_inputs("uniform", "alex8", scale=0.2, seed=4)
    old_matrix, old_acts = benchmark_inputs("alex8", scale=0.2, seed=4)
    assert matrix.equals(old_matrix) and np.array_equal(acts, old_acts)
    assert WORKLOADS["uniform"].is_uniform and not FC8.is_uniform


def test_generated_layer_reproduces_the_statistics():
    # The fc8 dump's shape and density: the measured spreads come back within their sampling noise.
    matrix, columns = stats_matrix(1000, 4096, 0.2566, 4, FC8, seed=1, codebook_size=15)
    acts = stats_activations(columns, 0.375, FC8, seed=1)
    assert matrix.nnz == round(0.2566 * 1000 * 4096) and matrix.codebook.size == 15
    measured = measure_workload_stats(matrix, acts, reference_density=0.375)
    assert measured.row_spread == pytest.approx(FC8.row_spread, abs=0.01)
    assert measured.column_spread == pytest.approx(FC8.column_spread, abs=0.01)
    assert measured.active_column_ratio == pytest.approx(FC8.active_column_ratio, abs=0.01)
    assert np.count_nonzero(acts) == round(0.375 * FC8.activation_density_scale * 4096)
    again, _ = stats_matrix(1000, 4096, 0.2566, 4, FC8, seed=1, codebook_size=15)
    assert again.equals(matrix)


def test_inputs_can_prefer_denser_columns():
    stats = WorkloadStats("skewed", 0.1, 0.3, 1.2, 1.0, "test")
    matrix, columns = stats_matrix(400, 3000, 0.1, 4, stats, seed=2)
    acts = stats_activations(columns, 0.3, stats, seed=2)
    measured = measure_workload_stats(matrix, acts)
    assert measured.active_column_ratio == pytest.approx(1.2, abs=0.03)
    assert measured.activation_density_scale == 1.0


def test_activation_density_is_scaled_and_capped():
    _, acts = workload_inputs(FC8, "alex8", scale=0.5)
    assert np.count_nonzero(acts) == round(0.375 * FC8.activation_density_scale * 2048)
    _, acts = workload_inputs(FC8, "nt-lstm", scale=0.5)
    assert np.all(acts != 0)  # 100% dense inputs stay at 100%


def test_fc8_preset_layers_are_more_imbalanced_than_uniform():
    from eie_model import simulate_layer

    uniform = simulate_layer(*workload_inputs("uniform", "alex7", scale=0.25))
    fc8 = simulate_layer(*workload_inputs("fc8-stats", "alex7", scale=0.25))
    assert (
        fc8.pe_processed.max() / fc8.pe_processed.mean()
        > uniform.pe_processed.max() / uniform.pe_processed.mean()
    )


@needs_dump
def test_the_fc8_preset_is_the_dumps_measurement():
    dump = read_eie_dump(DUMP)
    measured = measure_workload_stats(
        dump.matrix, dump.activations, reference_density=0.375, bias_column=True
    )
    for field in ("row_spread", "column_spread", "active_column_ratio", "activation_density_scale"):
        assert getattr(measured, field) == pytest.approx(getattr(FC8, field), abs=6e-4), field


@needs_dump
def test_sweep_inputs_hold_the_dump_as_a_layer():
    inputs = sweep_inputs("fc8-stats", scale=0.1, dump=DUMP)
    matrix, acts = inputs("dump:eie_alexnet_fc8", 4)
    assert matrix.shape == (1000, 4097) and acts[-1] == 1.0
    assert inputs("alex8", 4)[0].shape == (100, 410)


def test_bad_workloads_are_rejected():
    with pytest.raises(ValueError, match="unknown workload 'real'"):
        get_workload("real")
    with pytest.raises(ValueError, match="row_spread"):
        WorkloadStats("x", -0.1, 0.0, 1.0, 1.0, "")
    with pytest.raises(ValueError, match="active_column_ratio"):
        WorkloadStats("x", 0.1, 0.0, 0.0, 1.0, "")
    with pytest.raises(ValueError, match="finite"):
        WorkloadStats("x", float("nan"), 0.0, 1.0, 1.0, "")
    with pytest.raises(ValueError, match="unknown benchmark"):
        workload_inputs(FC8, "alex9")
    with pytest.raises(ValueError, match="scale"):
        workload_inputs(FC8, "alex8", scale=0)
    matrix, _ = benchmark_inputs("alex8", scale=0.05)
    with pytest.raises(ValueError, match="no non-zero"):
        measure_workload_stats(matrix, np.zeros(matrix.shape[1]))
    with pytest.raises(ValueError, match="shape"):
        measure_workload_stats(matrix, np.ones(3))
    with pytest.raises(TypeError):
        measure_workload_stats("matrix", np.ones(3))
