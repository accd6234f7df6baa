"""The benchmark layers shared by the benchmarks, the EIE model's command line and the report.

The nine benchmark layers of the EIE paper (Table III) with their weight and activation
densities, LLM-sized projection layers for the GPU benchmarks, and the inputs EIE is simulated on.

The benchmark layers' trained weights are not public, so `benchmark_inputs` gives a random layer
of the paper's shape and weight density (`random_compressed_matrix`, ``2**weight_bits - 1``
centroids: EIE's non-zero weights) fed a random non-negative input (ReLU-like: half-normal
values) with exactly the paper's share of non-zero activations; both are seeded. ``scale``
shrinks both dimensions (for quick runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.matrix import CompressedMatrix
from workloads.synthetic import random_compressed_matrix


@dataclass(frozen=True)
class LayerSpec:
    """A benchmark layer: ``inputs`` -> ``outputs`` at a weight density (share of weights kept)
    and an activation density (share of non-zero input activations; 1.0 where unknown)."""

    name: str
    inputs: int
    outputs: int
    weight_density: float
    activation_density: float = 1.0

    @property
    def weights(self) -> int:
        return self.inputs * self.outputs

    def random_matrix(self, bits: int, seed: int = 0) -> CompressedMatrix:
        """A random compressed layer of this shape and weight density (the paper's trained
        weights are not public)."""
        return random_compressed_matrix(self.outputs, self.inputs, self.weight_density, bits, seed=seed)


PAPER_LAYERS: dict[str, LayerSpec] = {
    spec.name: spec
    for spec in (
        LayerSpec("alex6", 9216, 4096, 0.09, 0.351),
        LayerSpec("alex7", 4096, 4096, 0.09, 0.353),
        LayerSpec("alex8", 4096, 1000, 0.25, 0.375),
        LayerSpec("vgg6", 25088, 4096, 0.04, 0.183),
        LayerSpec("vgg7", 4096, 4096, 0.04, 0.375),
        LayerSpec("vgg8", 4096, 1000, 0.23, 0.411),
        LayerSpec("nt-we", 4096, 600, 0.10, 1.0),
        LayerSpec("nt-wd", 600, 8791, 0.11, 1.0),
        LayerSpec("nt-lstm", 1201, 2400, 0.10, 1.0),
    )
}

LLM_LAYERS: dict[str, LayerSpec] = {
    f"llm-{i}x{o}-d{int(d * 100)}": LayerSpec(f"llm-{i}x{o}-d{int(d * 100)}", i, o, d)
    for i, o in ((4096, 4096), (4096, 14336), (14336, 4096))
    for d in (0.10, 0.30)
}


def get_layer(name: str) -> LayerSpec:
    """Look up a layer by name in the paper and LLM registries."""
    key = name.lower()
    for registry in (PAPER_LAYERS, LLM_LAYERS):
        if key in registry:
            return registry[key]
    known = ", ".join([*PAPER_LAYERS, *LLM_LAYERS])
    raise KeyError(f"unknown layer {name!r}; known layers: {known}")


#: The names of the paper's benchmark layers, in the paper's order.
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


def scaled_benchmark(name: str, scale: float = 1.0) -> tuple[LayerSpec, int, int]:
    """Benchmark ``name``'s spec and its outputs and inputs shrunk by ``scale`` (at least one)."""
    key = name.lower()
    if key not in PAPER_LAYERS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    spec = PAPER_LAYERS[key]
    return spec, max(1, round(spec.outputs * scale)), max(1, round(spec.inputs * scale))


def benchmark_inputs(
    name: str, weight_bits: int = 4, seed: int = 0, scale: float = 1.0
) -> tuple[CompressedMatrix, np.ndarray]:
    """The random layer and input vector of benchmark ``name`` (see the module docstring)."""
    spec, outputs, inputs = scaled_benchmark(name, scale)
    matrix = random_compressed_matrix(
        outputs, inputs, spec.weight_density, weight_bits, seed=seed, codebook_size=(1 << weight_bits) - 1
    )
    return matrix, benchmark_activations(inputs, spec.activation_density, seed)
