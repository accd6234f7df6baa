"""`dcomp predict-gpu`: the per-layer GPU prediction from the compiled code, written to
``perf/results/cost/`` (CSV, JSON, a markdown table and a PNG of the predicted speedups).

For the nine EIE / Deep Compression FC layers and the LLM decode shapes (4096x4096,
4096->14336, 14336->4096 at 10% and 30% density), the three GPU forms (fixed-width, Huffman,
dense codes) at batch 1 and 16, on each machine of `perf.cost.machines`: the launches the dispatcher makes are
compiled for the machine's architecture as they specialize, and `perf.cost.roofline` predicts
their time beside cuBLAS fp16 on the dense layer. Layout summaries are cached
(`perf.cost.layer_stats`), compilations by Triton's cache. Everything written is **predicted from
the compiled code, not measured**.

    dcomp predict-gpu [--out perf/results/cost] [--machines h100-sxm h200] [--layers alex7 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perf.cost import PREDICTED_LABEL
from perf.cost.compiled import KernelCost, analyze, compile_launch
from perf.cost.launches import Launch, decodes_for_cublas, layer_launches
from perf.cost.layer_stats import CACHE_PATH, DEFAULT_BITS, LayerStats, layer_stats
from perf.cost.machines import DEFAULT_MACHINE, MACHINES, get_machine, machine_rows
from perf.cost.roofline import KERNEL_MODELS, combine, predict_launch
from perf.cost.specialize import specialize
from perf.cost.tools import triton_version
from perf.harness import REPO_ROOT, Progress, doc_summary, machine_info, write_csv

RESULTS_DIR = REPO_ROOT / "perf" / "results" / "cost"
JSON_NAME, CSV_NAME, MARKDOWN_NAME, PLOT_NAME = (
    "predictions.json",
    "predictions.csv",
    "predictions.md",
    "predicted_speedup.png",
)
FORMS = ("fixed", "huffman", "dense_codes")
BATCHES = (1, 16)
ELEMENT_BYTES = 2  # x and y in float16, as cuBLAS fp16 beside them


def prediction_layers() -> dict:
    """The layers predicted: the paper's nine, then the LLM decode shapes (name -> spec)."""
    from workloads import LLM_LAYERS, PAPER_LAYERS

    return {**PAPER_LAYERS, **LLM_LAYERS}


@dataclass
class Predictions:
    """Rows of the prediction table, the compiled cost of every distinct launch, provenance."""

    rows: list[dict]
    kernels: list[dict]
    info: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "label": PREDICTED_LABEL,
            "info": self.info,
            "machines": machine_rows(),
            "rows": self.rows,
            "kernels": self.kernels,
        }


def _items(form: str, constexprs: dict) -> int:
    from dc_kernels.dense_codes.launch import loop_items as codes_items
    from dc_kernels.fixed.launch import loop_items as fixed_items
    from dc_kernels.huffman.launch import loop_items as huffman_items

    return {"fixed": fixed_items, "huffman": huffman_items, "dense_codes": codes_items}[form](constexprs)


class _CostCache:
    """Compiled cost per distinct specialization (layers of equal shape class share one)."""

    def __init__(self) -> None:
        self.costs: dict[str, KernelCost] = {}
        self.rows: list[dict] = []

    def cost(self, form: str, launch: Launch, arch: int, layer: str) -> KernelCost:
        key = f"{arch}|{specialize(launch.kernel, launch.args, launch.kwargs, arch).key()}"
        if key not in self.costs:
            compiled = compile_launch(launch.kernel, launch.args, launch.kwargs, arch)
            bb = int(launch.constexprs.get("BB", 1))
            self.costs[key] = analyze(compiled, _items(form, launch.constexprs), bb)
            self.rows.append({"first_layer": layer, "form": form, **self.costs[key].as_dict()})
        return self.costs[key]


def predict(
    machines=(DEFAULT_MACHINE, "h200"),
    layers: list[str] | None = None,
    forms=FORMS,
    batches=BATCHES,
    cache: Path | None = CACHE_PATH,
    progress=None,
) -> Predictions:
    """The prediction rows for ``layers`` (default: all of `prediction_layers`) on ``machines``."""
    say = progress or (lambda message: None)
    known = prediction_layers()
    names = list(known) if layers is None else list(layers)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; known: {', '.join(known)}")
    for form in forms:
        if form not in KERNEL_MODELS:
            raise ValueError(f"unknown form {form!r}; known: {', '.join(KERNEL_MODELS)}")
    chosen = [get_machine(m) for m in machines]
    stats = layer_stats([known[n] for n in names], DEFAULT_BITS, cache=cache, progress=say)
    costs = _CostCache()
    rows = []
    for k, name in enumerate(names, 1):
        rows += _layer_rows(stats[name], chosen, forms, batches, costs)
        say(f"predicted [{k}/{len(names)}] {name} ({len(costs.costs)} distinct compilations so far)")
    info = {
        **{k: v for k, v in machine_info().items() if k in ("date", "commit", "torch", "triton", "python")},
        "triton": triton_version(),
        "label": PREDICTED_LABEL,
        "code_bits": str(DEFAULT_BITS),
        "element": "float16",
    }
    return Predictions(rows, costs.rows, info)


def _layer_rows(stats: LayerStats, machines, forms, batches, costs: _CostCache) -> list[dict]:
    rows = []
    for form in forms:
        model = KERNEL_MODELS[form]
        for batch in batches:
            launches = layer_launches(form, stats, batch)
            for machine in machines:
                parts = [
                    predict_launch(
                        machine,
                        stats,
                        model,
                        launch,
                        costs.cost(form, launch, machine.arch, stats.name),
                        ELEMENT_BYTES,
                    )
                    for launch in launches
                ]
                rows.append(
                    combine(machine, stats, form, batch, parts, dense_gemm=decodes_for_cublas(launches))
                )
    return rows


# ------------------------------------------------------------------------------------ output
def markdown_table(rows: list[dict], machine: str) -> str:
    """One line per layer: cuBLAS fp16, the forms and their speedups at batch 1 and 16."""
    by = {(r["layer"], r["form"], r["batch"]): r for r in rows if r["machine"] == machine}
    layers = list(dict.fromkeys(r["layer"] for r in rows if r["machine"] == machine))
    batches = sorted({r["batch"] for r in rows if r["machine"] == machine})
    header = ["layer", "out x in", "density"]
    for b in batches:
        header += [
            f"cuBLAS fp16 b{b} us",
            f"fixed b{b} us (bound)",
            f"Huffman b{b} us (bound)",
            f"dense codes b{b} us (bound)",
            f"speedup b{b}",
        ]
    lines = [
        f"Predicted on {MACHINES[machine].name} ({PREDICTED_LABEL}):",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for layer in layers:
        any_row = next(r for (n, _, _), r in by.items() if n == layer)
        cells = [layer, f"{any_row['outputs']}x{any_row['inputs']}", f"{any_row['density']:.2f}"]
        for b in batches:
            forms = [by.get((layer, form, b)) for form in FORMS]
            ref = next(r for r in forms if r is not None)
            cells.append(f"{ref['cublas_fp16_us']:.1f}")
            for r in forms:
                cells.append("-" if r is None else f"{r['predicted_us']:.1f} ({r['bound']})")
            speedups = [f"{r['predicted_speedup']:.2f}" if r else "-" for r in forms]
            cells.append(" / ".join(speedups))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "speedup = cuBLAS fp16 time / kernel time (fixed / Huffman / dense codes); bound = the binding bound "
        "(issue, lsu, l1, hbm, latency). Fixed and Huffman: 5-bit codes; dense codes: 4-bit codes (15 shared "
        "weights and the zero code), whatever the density.",
    ]
    return "\n".join(lines)


def plot_speedups(rows: list[dict], path: Path) -> Path:
    """Grouped bars of the predicted speedup over cuBLAS fp16 per layer, one panel per machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    machines = list(dict.fromkeys(r["machine"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    series = [
        (f, b) for b in sorted({r["batch"] for r in rows}) for f in FORMS if any(r["form"] == f for r in rows)
    ]
    colors = {
        ("fixed", 1): "tab:green",
        ("huffman", 1): "tab:olive",
        ("dense_codes", 1): "tab:purple",
        ("fixed", 16): "tab:blue",
        ("huffman", 16): "tab:gray",
        ("dense_codes", 16): "tab:pink",
    }
    names = {"fixed": "fixed-width", "huffman": "Huffman", "dense_codes": "dense codes"}
    fig, axes = plt.subplots(len(machines), 1, figsize=(max(9.0, 0.9 * len(layers) + 3), 4.2 * len(machines)))
    axes = np.atleast_1d(axes)
    by = {(r["machine"], r["layer"], r["form"], r["batch"]): r["predicted_speedup"] for r in rows}
    width = 0.8 / len(series)
    x = np.arange(len(layers))
    for ax, machine in zip(axes, machines):
        for i, (form, batch) in enumerate(series):
            heights = [by.get((machine, layer, form, batch), np.nan) for layer in layers]
            ax.bar(
                x + (i - (len(series) - 1) / 2) * width,
                heights,
                width,
                label=f"{names[form]}, batch {batch}",
                color=colors.get((form, batch), "tab:cyan"),
            )
        ax.axhline(1.0, color="black", linewidth=0.8, label="cuBLAS fp16")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.set_xticks(x, layers, rotation=30, ha="right")
        ax.set_ylabel("speedup over cuBLAS fp16 (x)")
        ax.set_title(f"{MACHINES[machine].name}: {PREDICTED_LABEL}", fontsize=10)
        ax.set_ylim(
            top=5 * np.nanmax([v for (m, *_), v in by.items() if m == machine])
        )  # room for the legend
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(series))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(predictions: Predictions, out: Path, plot: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [
        write_csv(out / CSV_NAME, predictions.rows, predictions.info),
        out / JSON_NAME,
        out / MARKDOWN_NAME,
    ]
    (out / JSON_NAME).write_text(json.dumps(predictions.to_json(), indent=1) + "\n")
    machines = list(dict.fromkeys(r["machine"] for r in predictions.rows))
    tables = [markdown_table(predictions.rows, m) for m in machines]
    (out / MARKDOWN_NAME).write_text("\n\n".join(tables) + "\n")
    if plot:
        written.append(plot_speedups(predictions.rows, out / PLOT_NAME))
    return written


def load_predictions(path: Path = RESULTS_DIR / JSON_NAME) -> Predictions | None:
    """The committed predictions, or None when the file is absent."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Predictions(data["rows"], data.get("kernels", []), data.get("info", {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcomp predict-gpu", description=doc_summary(__doc__))
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help=f"output folder (default {RESULTS_DIR})"
    )
    parser.add_argument("--machines", nargs="+", choices=list(MACHINES), default=[DEFAULT_MACHINE, "h200"])
    parser.add_argument("--layers", nargs="+", default=None, help="layer names (default: paper + LLM layers)")
    parser.add_argument(
        "--no-cache", action="store_true", help="rebuild the layouts instead of reading the cache"
    )
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    progress = Progress()
    try:
        predictions = predict(
            args.machines, args.layers, cache=None if args.no_cache else CACHE_PATH, progress=progress
        )
    except ValueError as exc:
        print(f"predict-gpu: {exc}", file=sys.stderr)
        return 2
    for path in write_outputs(predictions, args.out, plot=not args.no_plot):
        progress(f"wrote {path}")
    print(markdown_table(predictions.rows, args.machines[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
