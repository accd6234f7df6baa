"""The inputs EIE is simulated on: the paper's nine benchmark layers and the authors' dump.

The benchmark layers' trained weights are not public, so each is a random layer of the paper's
shape and weight density (`compress.random_compressed_matrix`, ``2**weight_bits - 1`` centroids)
fed a random non-negative input (ReLU-like: half-normal values) with exactly the paper's share
of non-zero activations; both are seeded. ``scale`` shrinks both dimensions (for quick runs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress import PAPER_LAYERS, CompressedMatrix, random_compressed_matrix
from eie_model.config import EIEConfig
from eie_model.dump import read_eie_dump
from eie_model.encoding import encode_eie
from eie_model.energy import EnergyTable
from eie_model.simulator import SimResult, simulate_encoded, simulate_layer

BENCHMARKS: tuple[str, ...] = tuple(PAPER_LAYERS)


def benchmark_activations(size: int, density: float, seed: int = 0) -> np.ndarray:
    """A non-negative float32 vector with exactly ``round(density * size)`` (at least one)
    non-zero, half-normal entries at random positions."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng([seed, 1])
    count = min(size, max(1, round(density * size)))
    out = np.zeros(size, dtype=np.float32)
    positions = rng.choice(size, size=count, replace=False)
    # |N(0, 1)| is 0 with probability 0; the floor keeps every chosen activation non-zero.
    out[positions] = np.maximum(np.abs(rng.standard_normal(count)), 1e-3).astype(np.float32)
    return out


def benchmark_inputs(
    name: str, weight_bits: int = 4, seed: int = 0, scale: float = 1.0
) -> tuple[CompressedMatrix, np.ndarray]:
    """The random layer and input vector of benchmark ``name`` (see the module docstring)."""
    key = name.lower()
    if key not in PAPER_LAYERS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    spec = PAPER_LAYERS[key]
    outputs = max(1, round(spec.outputs * scale))
    inputs = max(1, round(spec.inputs * scale))
    matrix = random_compressed_matrix(
        outputs, inputs, spec.weight_density, weight_bits, seed=seed, codebook_size=(1 << weight_bits) - 1
    )
    return matrix, benchmark_activations(inputs, spec.activation_density, seed)


def simulate_benchmark(
    name: str,
    config: EIEConfig | None = None,
    *,
    seed: int = 0,
    scale: float = 1.0,
    energy_table: EnergyTable | None = None,
) -> SimResult:
    """Simulate one of the paper's benchmark layers (``alex6`` ... ``nt-lstm``) on ``config``."""
    config = EIEConfig() if config is None else config
    matrix, activations = benchmark_inputs(name, config.weight_bits, seed, scale)
    return simulate_layer(matrix, activations, config, name=name.lower(), energy_table=energy_table)


def simulate_dump(
    directory: str | Path, config: EIEConfig | None = None, *, energy_table: EnergyTable | None = None
) -> SimResult:
    """Simulate the layer of an authors' dump folder with its own input activations.

    With no ``config`` (or one with the dump's PEs and bit widths whose register file holds
    the PE's rows) the stored arrays run as they are; otherwise the decoded layer is encoded
    again for ``config``.
    """
    dump = read_eie_dump(directory)
    layer = dump.layer
    if config is None:
        config = EIEConfig(pes=layer.pes, weight_bits=layer.weight_bits, index_bits=layer.index_bits)
    same_layout = (config.pes, config.weight_bits, config.index_bits) == (
        layer.pes,
        layer.weight_bits,
        layer.index_bits,
    ) and layer.rows_per_pe <= config.rf_size
    if not same_layout:
        rows_per_pe = -(-layer.out_features // config.pes)
        layer = encode_eie(
            dump.matrix,
            config.pes,
            config.weight_bits,
            config.index_bits,
            batch_rows=config.rf_size if rows_per_pe > config.rf_size else None,
        )
    return simulate_encoded(
        layer, dump.activations, config, name=f"dump:{dump.name}", energy_table=energy_table
    )
