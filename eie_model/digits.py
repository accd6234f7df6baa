"""EIE on a real network: LeNet-300-100 on scikit-learn's digits, with real activations.

The demo network of `compress.examples.digits` (64 -> 300 -> 100 -> 10) is trained, pruned with
retraining and weight-shared by `compress.Compressor` at a reduced schedule (a few seconds on a
CPU), its codebooks are fitted to EIE's 15 non-zero weights (`fit_codebook`), and one test
image is run through the compressed network in float: the input of every layer (pixels, then
ReLU outputs) is the activation vector EIE is simulated with. Biases are added outside EIE.
Needs scikit-learn (the ``examples`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compress import CompressedMatrix
from eie_model.codebook import fit_codebook
from eie_model.config import EIEConfig
from eie_model.energy import EnergyTable
from eie_model.simulator import SimResult, simulate_layer

#: Reduced version of the demo's schedule: epochs of dense training, of retraining per pruning
#: stage and of centroid fine-tuning.
EPOCHS = {"dense": 10, "retrain": 3, "finetune": 3}
DENSITY = {"fc1": 0.2, "fc2": 0.08, "fc3": 0.3}


@dataclass(frozen=True, eq=False)
class DigitsLayer:
    """One compressed layer of the digits network and its input for one test image."""

    name: str
    matrix: CompressedMatrix
    activations: np.ndarray


@dataclass(frozen=True, eq=False)
class DigitsWorkload:
    layers: list[DigitsLayer]
    accuracy: float  # test accuracy (%) of the compressed network with EIE-fitted codebooks
    image: int


def digits_workload(weight_bits: int = 4, seed: int = 0, image: int = 0) -> DigitsWorkload:
    """Train and compress the digits network, then take one test image's activations."""
    # The network is tiny: one thread is faster than several competing for a loaded machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _digits_workload(weight_bits, seed, image)
    finally:
        torch.set_num_threads(threads)


def _digits_workload(weight_bits: int, seed: int, image: int) -> DigitsWorkload:
    from compress.compressor import Compressor
    from compress.config import DeepCompressionConfig
    from compress.examples.digits import LeNet300100, accuracy, load_digits_split, train

    split = load_digits_split()
    if not 0 <= image < split.x_test.shape[0]:
        raise ValueError(f"image must be in 0..{split.x_test.shape[0] - 1}, got {image}")
    torch.manual_seed(seed)
    model = LeNet300100()
    train(model, split, epochs=EPOCHS["dense"], lr=1e-3, seed=seed)
    config = DeepCompressionConfig(
        density=DENSITY["fc2"],
        bits=weight_bits,
        layers={name: {"density": d} for name, d in DENSITY.items() if name != "fc2"},
        prune_stages=2,
    )
    compressor = Compressor(model, config).prepare()
    for stage in range(config.prune_stages):
        if stage:
            compressor.prune()
        kwargs = {"penalty": compressor.l2_penalty, "after_step": compressor.step}
        train(model, split, epochs=EPOCHS["retrain"], lr=1e-3, seed=seed + stage + 1, **kwargs)
    compressor.share()
    train(model, split, epochs=EPOCHS["finetune"], lr=3e-4, seed=seed + 100, after_step=compressor.step)
    matrices = {name: fit_codebook(m, (1 << weight_bits) - 1) for name, m in compressor.finalize().items()}
    with torch.no_grad():
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
        model(split.x_test[image : image + 1])
        for hook in hooks:
            hook.remove()
    layers = [DigitsLayer(name, matrices[name], inputs[name]) for name in matrices]
    return DigitsWorkload(layers, test_accuracy, image)


def simulate_digits(
    config: EIEConfig | None = None,
    *,
    seed: int = 0,
    image: int = 0,
    energy_table: EnergyTable | None = None,
) -> list[SimResult]:
    """Simulate the digits network's three layers on their real activations (one test image)."""
    config = EIEConfig() if config is None else config
    workload = digits_workload(config.weight_bits, seed, image)
    return [
        simulate_layer(
            layer.matrix, layer.activations, config, name=f"digits:{layer.name}", energy_table=energy_table
        )
        for layer in workload.layers
    ]
