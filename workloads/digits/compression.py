"""Deep Compression of the digits network: train dense, prune with retraining, share, fine-tune.

The one training pipeline behind the demo (`workloads.digits.demo`), the EIE workload
(`workloads.digits.eie_ready`) and the Huffman bit-count benchmark; they differ only in the
`DeepCompressionConfig` and the `Schedule`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from compress.compressor import Compressor
from compress.config import DeepCompressionConfig
from compress.matrix import CompressedMatrix
from workloads.digits.data import DigitsSplit
from workloads.digits.network import LeNet300100, accuracy, train

PHASES = ("dense", "retrain", "finetune")


@dataclass(frozen=True)
class Schedule:
    """How long and how fast each training phase runs, and how its minibatch order is seeded.

    ``epochs`` and ``learning_rates`` map each phase of `PHASES` (``dense``; ``retrain``, per
    pruning stage; ``finetune``, of the shared centroids) to its epoch count and Adam learning
    rate. With seed ``s``, the dense phase draws its minibatch order with ``s``, retraining after
    pruning stage ``k`` (1-based) with ``s + retrain_seed_step * k`` and the fine-tuning with
    ``s + finetune_seed_offset``.
    """

    epochs: Mapping[str, int]
    learning_rates: Mapping[str, float]
    retrain_seed_step: int
    finetune_seed_offset: int

    def __post_init__(self) -> None:
        for name, table in (("epochs", self.epochs), ("learning_rates", self.learning_rates)):
            if sorted(table) != sorted(PHASES):
                raise ValueError(f"{name} must have exactly the phases {PHASES}, got {sorted(table)}")
        for phase, count in self.epochs.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"epochs[{phase!r}] must be an int >= 1, got {count!r}")
        for phase, rate in self.learning_rates.items():
            if not (isinstance(rate, (int, float)) and np.isfinite(rate) and rate > 0):
                raise ValueError(f"learning_rates[{phase!r}] must be a positive number, got {rate!r}")

    def scaled(self, factor: float) -> Schedule:
        """The same schedule with every epoch count multiplied by ``factor`` (at least 1 epoch)."""
        if not (isinstance(factor, (int, float)) and factor > 0):
            raise ValueError(f"the epoch scale must be > 0, got {factor!r}")
        epochs = {phase: max(1, round(count * factor)) for phase, count in self.epochs.items()}
        return Schedule(epochs, self.learning_rates, self.retrain_seed_step, self.finetune_seed_offset)


@dataclass(frozen=True, eq=False)
class DigitsCompression:
    """A compressed digits network and what happened on the way.

    ``model`` holds the shared weights; ``layers`` its compressed layers by module name.
    Accuracies are test accuracies in percent after each phase; ``dense_weights`` and
    ``pruned_weights`` are each layer's flattened weights after dense training and after the
    last retraining (pruned weights are zeros there).
    """

    model: LeNet300100
    layers: dict[str, CompressedMatrix]
    dense_accuracy: float
    pruned_accuracy: float
    shared_accuracy: float
    compressed_accuracy: float
    dense_weights: dict[str, np.ndarray]
    pruned_weights: dict[str, np.ndarray]


def compress_digits(
    split: DigitsSplit,
    config: DeepCompressionConfig,
    schedule: Schedule,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> DigitsCompression:
    """Train LeNet-300-100 from ``seed``, prune it in ``config.prune_stages`` stages with
    retraining (masks held, ``config``'s L2 penalty), share its weights with k-means and
    fine-tune the centroids. ``log`` receives one line per phase."""
    say = log or (lambda message: None)
    torch.manual_seed(seed)
    model = LeNet300100()
    start = time.perf_counter()

    def test_accuracy() -> float:
        return accuracy(model, split.x_test, split.y_test)

    def weights() -> dict[str, np.ndarray]:
        return {name: module.weight.detach().flatten().numpy().copy() for name, module in _layers(model)}

    epochs, rates = schedule.epochs, schedule.learning_rates
    train(model, split, epochs=epochs["dense"], lr=rates["dense"], seed=seed)
    dense_accuracy = test_accuracy()
    dense_weights = weights()
    say(f"[seed {seed}] dense: {epochs['dense']} epochs, test accuracy {dense_accuracy:.2f}%")

    compressor = Compressor(model, config).prepare()
    for stage in range(1, config.prune_stages + 1):
        if stage > 1:
            compressor.prune()
        train(
            model,
            split,
            epochs=epochs["retrain"],
            lr=rates["retrain"],
            seed=seed + schedule.retrain_seed_step * stage,
            penalty=compressor.l2_penalty,
            after_step=compressor.step,
        )
        if log is not None:
            masks = compressor.masks().values()
            density = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
            say(
                f"[seed {seed}] pruning stage {stage}/{config.prune_stages}: {density:.1%} of weights kept, "
                f"retrained {epochs['retrain']} epochs, test accuracy {test_accuracy():.2f}%"
            )
    pruned_accuracy = test_accuracy()
    pruned_weights = weights()

    compressor.share()
    shared_accuracy = test_accuracy()
    train(
        model,
        split,
        epochs=epochs["finetune"],
        lr=rates["finetune"],
        seed=seed + schedule.finetune_seed_offset,
        after_step=compressor.step,
    )
    layers = compressor.finalize()
    compressed_accuracy = test_accuracy()
    say(
        f"[seed {seed}] weight sharing: {shared_accuracy:.2f}% before, {compressed_accuracy:.2f}% after "
        f"{epochs['finetune']} epochs of centroid fine-tuning ({time.perf_counter() - start:.1f} s)"
    )
    return DigitsCompression(
        model,
        layers,
        dense_accuracy,
        pruned_accuracy,
        shared_accuracy,
        compressed_accuracy,
        dense_weights,
        pruned_weights,
    )


def _layers(model: LeNet300100) -> list[tuple[str, torch.nn.Linear]]:
    return [(name, module) for name, module in model.named_children() if isinstance(module, torch.nn.Linear)]
