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
from pathlib import Path

import pandas as pd

from perf.harness import doc_summary
from workloads.digits.demo import (
    DEMO_SCHEDULE,
    TARGET_MAX_DROP,
    TARGET_RATE_PQ,
    TARGET_RATE_PQH,
    DemoRun,
    mean_table,
    run_demo,
)

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


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_outputs(result: dict, runs: list[DemoRun], out: Path) -> list[Path]:
    """``demo.json``, ``layers.csv`` (the mean size table) and, with matplotlib, the weight
    histogram of `FIGURE_LAYER` into ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "demo.json", out / "layers.csv"]
    written[0].write_text(json.dumps(result, indent=2) + "\n")
    mean_table(runs).to_csv(written[1], index_label="layer")
    figure = _plot_weights(runs[0], out / f"weights_{FIGURE_LAYER}.png")
    if figure is not None:
        written.append(figure)
    return written


def _plot_weights(run: DemoRun, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        _log("matplotlib is not installed (pip install 'deep-compression[plots]'): no figure written")
        return None
    dense = run.compression.dense_weights[FIGURE_LAYER]
    pruned = run.compression.pruned_weights[FIGURE_LAYER]
    kept = pruned[pruned != 0]
    codebook = run.compression.layers[FIGURE_LAYER].codebook
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
    """The demo's text report: the mean size table, accuracies, compression and targets."""
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
    parser = argparse.ArgumentParser(prog="dcomp demo", description=doc_summary(__doc__))
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
    result, runs = run_demo(args.seeds, DEMO_SCHEDULE.scaled(args.epochs_scale), log=_log)
    written = write_outputs(result, runs, args.out)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result, mean_table(runs)))
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
