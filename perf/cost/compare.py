"""Measured GPU times beside the predictions from the compiled code, and their ratio: how the cost
model gets checked.

The measured side is a GPU results folder (`perf.gpu_results`: batch 1, L2 flushed, per paper
layer: cuBLAS fp16, the fixed-width kernel, the Huffman kernel); the predicted side is the
committed ``perf/results/cost/predictions.json`` (`dcomp predict-gpu`) or, with ``--recompute``,
a fresh prediction made with the Triton installed here (on a GPU machine: the compiler that built
the measured kernels). Predictions are for the machine named like the measured GPU (H100, H200).
``ratio = measured / predicted``: above 1 the kernel ran slower than predicted.

    python -m perf.cost.compare [--measured DIR] [--recompute] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perf.cost import PREDICTED_LABEL
from perf.cost.predict import RESULTS_DIR, Predictions, load_predictions, predict
from perf.gpu_results import GpuResults, GpuResultsError, newest_gpu_results, read_gpu_results
from perf.harness import doc_summary, write_csv

CSV_NAME, MARKDOWN_NAME = "predicted_vs_measured.csv", "predicted_vs_measured.md"
KINDS = ("dense", "fixed", "huffman")  # cuBLAS fp16 on the dense layer, the two compressed kernels
_GPU_MACHINES = (("H200", "h200"), ("H100", "h100-sxm"))


def machine_for_gpu(gpu: str) -> str | None:
    """The machine key of a GPU name (``NVIDIA H100 80GB HBM3`` -> ``h100-sxm``), None if unknown."""
    upper = gpu.upper()
    return next((key for tag, key in _GPU_MACHINES if tag in upper), None)


def predicted_batch1(predictions: Predictions, machine: str) -> dict[str, dict[str, float]]:
    """layer -> {dense, fixed, huffman: predicted us} at batch 1 on ``machine``."""
    out: dict[str, dict[str, float]] = {}
    for row in predictions.rows:
        if row["machine"] != machine or int(row["batch"]) != 1:
            continue
        layer = out.setdefault(row["layer"], {})
        layer["dense"] = float(row["cublas_fp16_us"])
        layer[row["form"]] = float(row["predicted_us"])
        layer[f"{row['form']}_bound"] = row["bound"]
    return out


def compare(measured: GpuResults, predictions: Predictions, machine: str) -> list[dict]:
    """One row per measured layer: measured and predicted us of each kind and their ratio."""
    predicted = predicted_batch1(predictions, machine)
    rows = []
    for layer, times in measured.layers.items():
        p = predicted.get(layer, {})
        row: dict = {"layer": layer}
        for kind, value in zip(KINDS, (times.dense_us, times.fixed_us, times.huffman_us)):
            row[f"{kind}_measured_us"] = value
            row[f"{kind}_predicted_us"] = p.get(kind)
            row[f"{kind}_ratio"] = value / p[kind] if value is not None and p.get(kind) else None
        row["fixed_bound"], row["huffman_bound"] = p.get("fixed_bound"), p.get("huffman_bound")
        rows.append(row)
    return rows


def markdown(rows: list[dict], measured: GpuResults, machine: str, predicted_bits: str) -> str:
    header = ["layer"]
    for kind in KINDS:
        header += [f"{kind} measured us", f"{kind} predicted us", f"{kind} measured/predicted"]
    lines = [
        f"Measured on {measured.gpu} ({measured.date}, commit {measured.commit}, Triton {measured.triton}; "
        f"{measured.code_bits}-bit codes) beside the prediction for {machine} ({PREDICTED_LABEL}; "
        f"{predicted_bits}-bit codes); batch 1, L2 flushed.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["layer"]]
        for kind in KINDS:
            cells += [
                _fmt(row[f"{kind}_measured_us"]),
                _fmt(row[f"{kind}_predicted_us"]),
                _fmt(row[f"{kind}_ratio"], 2),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.cost.compare", description=doc_summary(__doc__))
    parser.add_argument(
        "--measured", type=Path, default=None, help="GPU results folder (default: the newest)"
    )
    parser.add_argument("--predictions", type=Path, default=RESULTS_DIR / "predictions.json")
    parser.add_argument("--recompute", action="store_true", help="predict now with the Triton installed here")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the measured folder)")
    args = parser.parse_args(argv)
    try:
        measured = read_gpu_results(args.measured) if args.measured else newest_gpu_results()
    except GpuResultsError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    if measured is None:
        print(
            "compare: no GPU results to compare with (run bash perf/gpu_check.sh on a GPU)", file=sys.stderr
        )
        return 2
    machine = machine_for_gpu(measured.gpu)
    if machine is None:
        print(f"compare: no machine figures for {measured.gpu!r} (known: H100, H200)", file=sys.stderr)
        return 2
    if args.recompute:
        predictions = predict((machine,), list(measured.layers), batches=(1,), progress=print)
    else:
        predictions = load_predictions(args.predictions)
        if predictions is None:
            print(f"compare: {args.predictions} not found (run dcomp predict-gpu)", file=sys.stderr)
            return 2
    rows = compare(measured, predictions, machine)
    out = args.out or measured.folder
    write_csv(out / CSV_NAME, rows, {**predictions.info, "gpu": measured.gpu, "machine": machine})
    text = markdown(rows, measured, machine, predictions.info.get("code_bits", "?"))
    (out / MARKDOWN_NAME).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
