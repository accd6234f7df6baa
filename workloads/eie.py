"""The workloads on the EIE model: the paper's benchmark layers and the digits network."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from compress.matrix import CompressedMatrix
from eie_model.config import EIEConfig
from eie_model.dump import read_eie_dump
from eie_model.dump_simulation import dump_label
from eie_model.energy import EnergyTable
from eie_model.simulator import SimResult, simulate_layer
from workloads.digits.eie_ready import digits_workload
from workloads.eie_workloads import WorkloadStats, workload_inputs


def simulate_benchmark(
    name: str,
    config: EIEConfig | None = None,
    *,
    seed: int = 0,
    scale: float = 1.0,
    energy_table: EnergyTable | None = None,
    workload: str | WorkloadStats = "uniform",
) -> SimResult:
    """Simulate one of the paper's benchmark layers (``alex6`` ... ``nt-lstm``) on ``config``,
    on the seeded random layer and input of `workload_inputs` for ``workload`` (a preset of
    `workloads.eie_workloads.WORKLOADS` or measured statistics; ``uniform``: `benchmark_inputs`)."""
    config = EIEConfig() if config is None else config
    matrix, activations = workload_inputs(workload, name, config.weight_bits, seed, scale)
    return simulate_layer(matrix, activations, config, name=name.lower(), energy_table=energy_table)


def simulate_digits(
    config: EIEConfig | None = None,
    *,
    seed: int = 0,
    image: int = 0,
    energy_table: EnergyTable | None = None,
) -> list[SimResult]:
    """Simulate the digits network's three layers on their real activations (one test image;
    trains the network first: `digits_workload`)."""
    config = EIEConfig() if config is None else config
    workload = digits_workload(config.weight_bits, seed, image)
    return [
        simulate_layer(
            layer.matrix, layer.activations, config, name=f"digits:{layer.name}", energy_table=energy_table
        )
        for layer in workload.layers
    ]


def sweep_inputs(
    workload: str | WorkloadStats = "uniform",
    *,
    seed: int = 0,
    scale: float = 1.0,
    dump: str | Path | None = None,
) -> Callable[[str, int], tuple[CompressedMatrix, np.ndarray]]:
    """The ``layer_inputs`` function of `eie_model.run_sweep`: benchmark layers under ``workload``
    and, when ``dump`` names an authors' dump folder, that layer (named by `dump_label`) with its
    own input (read once)."""
    benchmark = partial(workload_inputs, workload, seed=seed, scale=scale)
    if dump is None:
        return lambda name, weight_bits: benchmark(name, weight_bits)
    label = dump_label(dump)
    held = read_eie_dump(dump)

    def layer_inputs(name: str, weight_bits: int) -> tuple[CompressedMatrix, np.ndarray]:
        if name == label:
            return held.matrix, held.activations
        return benchmark(name, weight_bits)

    return layer_inputs
