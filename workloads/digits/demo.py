"""The demo's experiment: Deep Compression of LeNet-300-100 on digits, averaged over seeds.

Per seed: `compress_digits` at the demo's configuration and schedule, then the exact size of
every layer from `compress.size_table`. `summarize` turns the runs into the demo's result
(means over the seeds, per-seed values, per-layer rows, the targets). `dcomp demo`
(`perf.demo`) prints and writes it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from compress.config import DeepCompressionConfig
from compress.size import size_table
from workloads.digits.compression import DigitsCompression, Schedule, compress_digits
from workloads.digits.data import DigitsSplit, load_digits_split
from workloads.digits.network import single_thread

# Chosen by measurement: fc2 holds 60% of the weights and prunes hardest; fc1's rows are only 64
# wide, so 4-bit relative indices rarely need fillers; fc3 is small and sensitive, so it keeps
# more weights and bits.
DEMO_CONFIG = DeepCompressionConfig(
    density=0.06,
    bits=4,
    index_bits=5,
    layers={
        "fc1": {"density": 0.15, "index_bits": 4},
        "fc3": {"density": 0.3, "bits": 5, "index_bits": 4},
    },
    prune_stages=3,
    l2=1e-5,
)
DEMO_SCHEDULE = Schedule(
    epochs={"dense": 40, "retrain": 20, "finetune": 20},
    learning_rates={"dense": 1e-3, "retrain": 1e-3, "finetune": 3e-4},
    retrain_seed_step=100,
    finetune_seed_offset=1000,
)
#: The demo's targets: at least this much smaller than dense float32 (pruning + quantization in
#: the relative-index format, and with Huffman-coded streams) within this many points of the
#: dense network's test accuracy.
TARGET_RATE_PQ = 20.0
TARGET_RATE_PQH = 30.0
TARGET_MAX_DROP = 1.0
# Columns equal in every seed (shape and settings), shown as integers.
INTEGER_COLUMNS = ["weights", "nnz", "bits", "index_bit_width", "dense_bytes"]


@dataclass(frozen=True, eq=False)
class DemoRun:
    """One seed of the demo: the compressed network and its size table."""

    seed: int
    compression: DigitsCompression
    table: pd.DataFrame


def demo_run(
    seed: int,
    split: DigitsSplit,
    schedule: Schedule = DEMO_SCHEDULE,
    config: DeepCompressionConfig = DEMO_CONFIG,
    log: Callable[[str], None] | None = None,
) -> DemoRun:
    """The whole pipeline for one seed, with each layer's size at its index width."""
    compression = compress_digits(split, config, schedule, seed, log)
    layers = compression.layers
    table = size_table(layers, {name: config.for_layer(name).index_bits for name in layers})
    return DemoRun(seed, compression, table)


def run_demo(
    seeds: int,
    schedule: Schedule = DEMO_SCHEDULE,
    config: DeepCompressionConfig = DEMO_CONFIG,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, list[DemoRun]]:
    """Seeds ``0 .. seeds - 1`` on the fixed digits split (torch on one thread meanwhile); the
    `summarize`d result and the runs."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds!r}")
    split = load_digits_split()
    if log is not None:
        log(f"digits: {split.x_train.shape[0]} training and {split.x_test.shape[0]} test images")
    with single_thread():
        runs = [demo_run(seed, split, schedule, config, log) for seed in range(seeds)]
    return summarize(runs, config, dict(schedule.epochs)), runs


def compression_rate(table: pd.DataFrame, suffix: str) -> float:
    """Total dense bytes / total compressed bytes of scheme ``suffix`` (20 = 20x smaller)."""
    return float(table.loc["total", "dense_bytes"] / table.loc["total", f"bytes_{suffix}"])


def summarize(runs: Sequence[DemoRun], config: DeepCompressionConfig, epochs: dict[str, int]) -> dict:
    """The demo's JSON result: means over the seeds, per-seed values, per-layer rows."""
    if not runs:
        raise ValueError("summarize needs at least one run")
    per_seed = [
        {
            "seed": run.seed,
            "dense_accuracy": run.compression.dense_accuracy,
            "pruned_accuracy": run.compression.pruned_accuracy,
            "shared_accuracy": run.compression.shared_accuracy,
            "compressed_accuracy": run.compression.compressed_accuracy,
            "compression_rate_pq": compression_rate(run.table, "pq"),
            "compression_rate_pqh": compression_rate(run.table, "pqh"),
        }
        for run in runs
    ]

    def mean(key: str) -> float:
        return float(np.mean([row[key] for row in per_seed]))

    result = {
        "dense_accuracy": mean("dense_accuracy"),
        "compressed_accuracy": mean("compressed_accuracy"),
        "accuracy_drop": mean("dense_accuracy") - mean("compressed_accuracy"),
        "compression_rate_pq": mean("compression_rate_pq"),
        "compression_rate_pqh": mean("compression_rate_pqh"),
        "pruned_accuracy": mean("pruned_accuracy"),
        "shared_accuracy": mean("shared_accuracy"),
        "seeds": len(runs),
        "per_seed": per_seed,
        # pandas writes NA as null and numpy scalars as plain numbers.
        "layers": json.loads(mean_table(runs).reset_index().to_json(orient="records")),
        "target": {"compression_rate_pq": TARGET_RATE_PQ, "max_accuracy_drop": TARGET_MAX_DROP},
        "config": config.to_dict(),
        "epochs": epochs,
    }
    within_drop = result["accuracy_drop"] <= TARGET_MAX_DROP
    result["target"]["met"] = bool(result["compression_rate_pq"] >= TARGET_RATE_PQ and within_drop)
    result["target"]["compression_rate_pqh"] = TARGET_RATE_PQH
    result["target"]["met_pqh"] = bool(result["compression_rate_pqh"] >= TARGET_RATE_PQH and within_drop)
    return result


def mean_table(runs: Sequence[DemoRun]) -> pd.DataFrame:
    """Per-layer size table averaged over the seeds (sizes differ slightly with the fillers)."""
    tables = [run.table for run in runs]
    stacked = pd.concat(tables, keys=range(len(tables)))
    table = stacked.groupby(level=1, sort=False).mean(numeric_only=True)
    for column in INTEGER_COLUMNS:
        table[column] = table[column].round().astype("Int64")
    return table
