"""Layer specifications shared by benchmarks, the EIE model and the report.

The nine benchmark layers of the EIE paper (Table III; `../shared/reference/facts.md`) with their
weight and activation densities, and LLM-sized projection layers for the GPU benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress.matrix import CompressedMatrix
from compress.synthetic import random_compressed_matrix


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
