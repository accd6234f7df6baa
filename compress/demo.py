"""`dcomp demo`: Deep Compression of LeNet-300-100 on scikit-learn's digits, end to end.

Per seed: train the dense network, prune it in three stages with retraining (masks held, L2
penalty), share the weights with k-means, fine-tune the centroids, then read the exact size of
every layer off the size table. Prints the table, dense vs compressed test accuracy and the
total compression (means over the seeds); writes ``demo.json``, ``layers.csv`` and
``weights_fc2.png`` into ``--out``. ``--json`` prints one JSON object instead of the text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from compress.compressor import Compressor
from compress.config import DeepCompressionConfig
from compress.examples.digits import LeNet300100, accuracy, load_digits_split, train
from compress.size import size_table

# Chosen by measurement (see README): fc2 holds 60% of the weights and prunes hardest; fc1's
# rows are only 64 wide, so 4-bit relative indices rarely need fillers; fc3 is small and
# sensitive, so it keeps more weights and bits.
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
EPOCHS = {"dense": 40, "retrain": 20, "finetune": 20}  # retrain: per pruning stage
LEARNING_RATES = {"dense": 1e-3, "retrain": 1e-3, "finetune": 3e-4}
TARGET_RATE_PQ = 20.0
TARGET_MAX_DROP = 1.0
FIGURE_LAYER = "fc2"
TABLE_COLUMNS = [
    "weights",
    "density",
    "bits",
    "index_bit_width",
    "weight_bits_pq",
    "index_bits_pq",
    "bytes_pq",
    "rate_pq",
    "weight_bits_pqh",
    "index_bits_pqh",
    "bytes_pqh",
    "rate_pqh",
]
HUFFMAN_SUFFIX = "pqh"
TARGET_RATE_PQH = 30.0  # the target once Huffman coding exists
# Columns equal in every seed (shape and settings), shown as integers.
INTEGER_COLUMNS = ["weights", "nnz", "bits", "index_bit_width", "dense_bytes"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_seed(seed: int, split, epochs: dict[str, int], config: DeepCompressionConfig) -> dict:
    """The whole pipeline for one seed; returns accuracies, the size table and figure data."""
    torch.manual_seed(seed)
    model = LeNet300100()
    start = time.perf_counter()
    train(model, split, epochs=epochs["dense"], lr=LEARNING_RATES["dense"], seed=seed)
    dense_accuracy = accuracy(model, split.x_test, split.y_test)
    dense_weights = getattr(model, FIGURE_LAYER).weight.detach().flatten().numpy().copy()
    _log(f"[seed {seed}] dense: {epochs['dense']} epochs, test accuracy {dense_accuracy:.2f}%")

    compressor = Compressor(model, config).prepare()
    for stage in range(1, config.prune_stages + 1):
        if stage > 1:
            compressor.prune()
        train(
            model,
            split,
            epochs=epochs["retrain"],
            lr=LEARNING_RATES["retrain"],
            seed=seed + 100 * stage,
            penalty=compressor.l2_penalty,
            after_step=compressor.step,
        )
        density = sum(int(m.sum()) for m in compressor.masks().values()) / sum(
            m.numel() for m in compressor.masks().values()
        )
        _log(
            f"[seed {seed}] pruning stage {stage}/{config.prune_stages}: {density:.1%} of weights kept, "
            f"retrained {epochs['retrain']} epochs, test accuracy "
            f"{accuracy(model, split.x_test, split.y_test):.2f}%"
        )
    pruned_accuracy = accuracy(model, split.x_test, split.y_test)
    pruned_weights = getattr(model, FIGURE_LAYER).weight.detach().flatten().numpy().copy()

    compressor.share()
    shared_accuracy = accuracy(model, split.x_test, split.y_test)
    train(
        model,
        split,
        epochs=epochs["finetune"],
        lr=LEARNING_RATES["finetune"],
        seed=seed + 1000,
        after_step=compressor.step,
    )
    layers = compressor.finalize()
    compressed_accuracy = accuracy(model, split.x_test, split.y_test)
    _log(
        f"[seed {seed}] weight sharing: {shared_accuracy:.2f}% before, {compressed_accuracy:.2f}% after "
        f"{epochs['finetune']} epochs of centroid fine-tuning ({time.perf_counter() - start:.1f} s)"
    )
    table = size_table(layers, {name: config.for_layer(name).index_bits for name in layers})
    return {
        "seed": seed,
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "shared_accuracy": shared_accuracy,
        "compressed_accuracy": compressed_accuracy,
        "table": table,
        "figure": (dense_weights, pruned_weights[pruned_weights != 0], layers[FIGURE_LAYER].codebook),
    }


def compression_rate(table: pd.DataFrame, suffix: str) -> float | None:
    """Total dense bytes / total compressed bytes (20 = 20x smaller); None if the size table
    has no such scheme yet."""
    column = f"bytes_{suffix}"
    if column not in table.columns:
        return None
    return float(table.loc["total", "dense_bytes"] / table.loc["total", column])


def summarize(runs: list[dict], config: DeepCompressionConfig, epochs: dict[str, int]) -> dict:
    """The demo's JSON result: means over the seeds, per-seed values, per-layer rows."""
    per_seed = [
        {
            key: run[key]
            for key in ("seed", "dense_accuracy", "pruned_accuracy", "shared_accuracy", "compressed_accuracy")
        }
        | {
            "compression_rate_pq": compression_rate(run["table"], "pq"),
            "compression_rate_pqh": compression_rate(run["table"], HUFFMAN_SUFFIX),
        }
        for run in runs
    ]

    def mean(key: str) -> float | None:
        values = [row[key] for row in per_seed]
        return None if any(v is None for v in values) else float(np.mean(values))

    layers = mean_table(runs)
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
        "layers": json.loads(layers.reset_index().to_json(orient="records")),
        "target": {"compression_rate_pq": TARGET_RATE_PQ, "max_accuracy_drop": TARGET_MAX_DROP},
        "config": config.to_dict(),
        "epochs": epochs,
    }
    result["target"]["met"] = bool(
        result["compression_rate_pq"] >= TARGET_RATE_PQ and result["accuracy_drop"] <= TARGET_MAX_DROP
    )
    result["target"]["compression_rate_pqh"] = TARGET_RATE_PQH
    result["target"]["met_pqh"] = bool(
        result["compression_rate_pqh"] >= TARGET_RATE_PQH and result["accuracy_drop"] <= TARGET_MAX_DROP
    )
    return result


def mean_table(runs: list[dict]) -> pd.DataFrame:
    """Per-layer size table averaged over the seeds (sizes differ slightly with the fillers)."""
    tables = [run["table"] for run in runs]
    stacked = pd.concat(tables, keys=range(len(tables)))
    table = stacked.groupby(level=1, sort=False).mean(numeric_only=True)
    for column in INTEGER_COLUMNS:
        table[column] = table[column].round().astype("Int64")
    return table


def write_outputs(result: dict, runs: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "demo.json", out / "layers.csv"]
    written[0].write_text(json.dumps(result, indent=2) + "\n")
    mean_table(runs).to_csv(written[1], index_label="layer")
    figure = _plot_weights(runs[0], out / f"weights_{FIGURE_LAYER}.png")
    if figure is not None:
        written.append(figure)
    return written


def _plot_weights(run: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        _log("matplotlib is not installed (pip install 'deep-compression[plots]'): no figure written")
        return None
    dense, kept, codebook = run["figure"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.hist(dense, bins=200, color="tab:blue")
    top.set_title(f"{FIGURE_LAYER} weights of the dense model ({dense.size} weights)")
    bottom.hist(kept, bins=200, color="tab:orange")
    for centroid in codebook:
        bottom.axvline(float(centroid), color="black", linewidth=0.8, linestyle="--")
    bottom.set_title(
        f"after pruning and retraining ({kept.size} kept); dashed: the {codebook.size} fine-tuned centroids"
    )
    bottom.set_xlabel("weight value")
    for axis in (top, bottom):
        axis.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_report(result: dict, layers: pd.DataFrame) -> str:
    table = layers[TABLE_COLUMNS].to_string(
        float_format=lambda v: f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}",
    )
    lines = [
        f"LeNet-300-100 on scikit-learn digits, mean over {result['seeds']} seed(s)",
        "",
        table,
        "",
        f"test accuracy: dense {result['dense_accuracy']:.2f}%, pruned {result['pruned_accuracy']:.2f}%, "
        f"compressed {result['compressed_accuracy']:.2f}% (drop {result['accuracy_drop']:.2f} points)",
        f"compression (P+Q, relative-index format): {result['compression_rate_pq']:.1f}x smaller "
        "than dense float32",
        "compression (P+Q+H, Huffman-coded streams, code tables included): "
        f"{result['compression_rate_pqh']:.1f}x smaller than dense float32",
        f"target: >= {TARGET_RATE_PQ:.0f}x (P+Q) within {TARGET_MAX_DROP} point of dense: "
        + ("met" if result["target"]["met"] else "NOT met"),
        f"target: >= {TARGET_RATE_PQH:.0f}x (P+Q+H) within {TARGET_MAX_DROP} point of dense: "
        + ("met" if result["target"]["met_pqh"] else "NOT met"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcomp demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds to average (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    parser.add_argument(
        "--epochs-scale",
        type=float,
        default=1.0,
        help="multiply every epoch count (default 1; smaller for a quick check)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if not args.epochs_scale > 0:
        parser.error(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    epochs = {stage: max(1, round(count * args.epochs_scale)) for stage, count in EPOCHS.items()}
    split = load_digits_split()
    _log(f"digits: {split.x_train.shape[0]} training and {split.x_test.shape[0]} test images")
    # The matrices are tiny: one thread avoids thread start-up and contention costs, which
    # otherwise dominate (measured 10x slower with the default threads on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [run_seed(seed, split, epochs, DEMO_CONFIG) for seed in range(args.seeds)]
    finally:
        torch.set_num_threads(threads)
    result = summarize(runs, DEMO_CONFIG, epochs)
    written = write_outputs(result, runs, args.out)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result, mean_table(runs)))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
