"""The digits network ready for EIE: real layers and real activations of one test image.

`compress_digits` trains, prunes with retraining and weight-shares LeNet-300-100 at a reduced
schedule (a few seconds on a CPU); its codebooks are fitted to EIE's ``2**weight_bits - 1``
non-zero weights (`eie_model.fit_codebook`), and one test image is run through the compressed
network in float: the input of every layer (pixels, then ReLU outputs) is the activation vector
EIE is simulated with. Biases are added outside EIE. Needs scikit-learn (the ``examples`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compress.config import DeepCompressionConfig
from compress.matrix import CompressedMatrix
from eie_model.codebook import fit_codebook
from workloads.digits.compression import Schedule, compress_digits
from workloads.digits.data import DigitsSplit, load_digits_split
from workloads.digits.network import accuracy, single_thread

#: A reduced version of the demo's schedule (`workloads.digits.demo.DEMO_SCHEDULE`).
EIE_SCHEDULE = Schedule(
    epochs={"dense": 10, "retrain": 3, "finetune": 3},
    learning_rates={"dense": 1e-3, "retrain": 1e-3, "finetune": 3e-4},
    retrain_seed_step=1,
    finetune_seed_offset=100,
)
#: Share of weights kept per layer.
EIE_DENSITY = {"fc1": 0.2, "fc2": 0.08, "fc3": 0.3}


@dataclass(frozen=True, eq=False)
class DigitsLayer:
    """One compressed layer of the digits network and its input for one test image."""

    name: str
    matrix: CompressedMatrix
    activations: np.ndarray


@dataclass(frozen=True, eq=False)
class DigitsWorkload:
    """The network's layers in order, the test accuracy (%) of the compressed network with
    EIE-fitted codebooks, and the test image whose activations the layers hold."""

    layers: list[DigitsLayer]
    accuracy: float
    image: int


def digits_workload(weight_bits: int = 4, seed: int = 0, image: int = 0) -> DigitsWorkload:
    """Train and compress the digits network, then take test image ``image``'s activations."""
    split = load_digits_split()
    if not 0 <= image < split.x_test.shape[0]:
        raise ValueError(f"image must be in 0..{split.x_test.shape[0] - 1}, got {image}")
    config = DeepCompressionConfig(
        density=EIE_DENSITY["fc2"],
        bits=weight_bits,
        layers={name: {"density": d} for name, d in EIE_DENSITY.items() if name != "fc2"},
        prune_stages=2,
    )
    # The network is tiny: one thread is faster than several competing for a loaded machine.
    with single_thread():
        compression = compress_digits(split, config, EIE_SCHEDULE, seed)
        matrices = {name: fit_codebook(m, (1 << weight_bits) - 1) for name, m in compression.layers.items()}
        test_accuracy, inputs = _run_image(compression.model, matrices, split, image)
    layers = [DigitsLayer(name, matrices[name], inputs[name]) for name in matrices]
    return DigitsWorkload(layers, test_accuracy, image)


@torch.no_grad()
def _run_image(
    model: torch.nn.Module, matrices: dict[str, CompressedMatrix], split: DigitsSplit, image: int
) -> tuple[float, dict[str, np.ndarray]]:
    """Load ``matrices`` into ``model``; its test accuracy and each layer's input for ``image``."""
    for name, matrix in matrices.items():
        getattr(model, name).weight.copy_(torch.from_numpy(matrix.to_dense()))
    test_accuracy = accuracy(model, split.x_test, split.y_test)
    inputs = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda module, args, output, name=name: inputs.__setitem__(name, args[0][0].numpy().copy())
        )
        for name in matrices
    ]
    try:
        model(split.x_test[image : image + 1])
    finally:
        for hook in hooks:
            hook.remove()
    return test_accuracy, inputs
