"""The workloads on the EIE model: the paper's benchmark layers and the digits network."""

from __future__ import annotations

from eie_model.config import EIEConfig
from eie_model.energy import EnergyTable
from eie_model.simulator import SimResult, simulate_layer
from workloads.digits.eie_ready import digits_workload
from workloads.paper_layers import benchmark_inputs


def simulate_benchmark(
    name: str,
    config: EIEConfig | None = None,
    *,
    seed: int = 0,
    scale: float = 1.0,
    energy_table: EnergyTable | None = None,
) -> SimResult:
    """Simulate one of the paper's benchmark layers (``alex6`` ... ``nt-lstm``) on ``config``,
    on the seeded random layer and input of `benchmark_inputs`."""
    config = EIEConfig() if config is None else config
    matrix, activations = benchmark_inputs(name, config.weight_bits, seed, scale)
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
