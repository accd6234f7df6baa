"""The report as a list of blocks (headings, paragraphs, lists, tables, images) that both the
markdown and the HTML page render, so the two always say the same."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from perf.cost import PREDICTED_LABEL
from perf.cost.compare import predicted_batch1
from perf.cost.machines import MACHINES
from perf.reporting.collect import ReportData
from perf.reporting.plots import SWEEP_FIGURES
from perf.reporting.tables import (
    PLATFORMS,
    Table,
    eie_design_note,
    format_number,
    geometric_mean,
    platforms,
    render_markdown,
)

TITLE = "Hardware comparison report: Deep Compression on CPU, GPU and EIE"
KINDS = ("heading", "paragraph", "list", "table", "image")


@dataclass(frozen=True)
class Block:
    """``heading``/``paragraph``: ``text``; ``list``: ``items``; ``table``: ``table``; ``image``:
    ``text`` is the plot's key, ``caption`` its description."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    table: Table | None = None
    caption: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


def _range(values) -> str:
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return f"{format_number(min(finite))}-{format_number(max(finite))}" if finite else "-"


def summary(data: ReportData, frame: pd.DataFrame) -> list[str]:
    """The headline numbers, one sentence each."""
    sizes = data.sizes.loc["total"]
    n = len(data.config.layers)

    def mean(column: str) -> str:
        return format_number(geometric_mean(frame[column]))

    lines = [
        f"Size over the {n} layers: {1 / sizes['rate_pqh']:.1f}x smaller than dense float32 with Huffman "
        f"coding ({1 / sizes['rate_pq']:.1f}x pruned + quantized, {1 / sizes['rate_pruned']:.1f}x pruned "
        "only).",
        f"CPU, batch 1: CompressedLinear runs at {mean('speedup_cpu_compressed')}x the speed of the dense "
        f"layer (geometric mean; per layer {_range(frame['speedup_cpu_compressed'])}).",
    ]
    keys = platforms(data)
    if data.gpu is None:
        lines.append("GPU: no results committed, so no GPU numbers (see Machine and sources).")
    else:
        for key in (k for k in keys if k.startswith("gpu_")):
            lines.append(
                f"{PLATFORMS[key]} on the {data.gpu.gpu}, batch 1: {mean(f'speedup_{key}')}x faster than "
                f"CPU dense (geometric mean; per layer {_range(frame[f'speedup_{key}'])})."
            )
        if {"gpu_fixed", "gpu_dense"} <= set(keys):
            ratio = format_number(geometric_mean(frame["gpu_dense_us"] / frame["gpu_fixed_us"]))
            lines.append(
                f"GPU fixed-width kernel vs cuBLAS float16 on the dense layer: {ratio}x (geometric mean)."
            )
    predicted = predicted_speedups(data)
    if predicted:
        lines.append(
            f"GPU, {PREDICTED_LABEL}, batch 1 on the {MACHINES[data.predicted_machine].name}: "
            + ", ".join(f"{label} {format_number(v)}x" for label, v in predicted.items())
            + " the speed of cuBLAS fp16 on the dense layer (geometric means over the layers)."
        )
    lines.append(
        f"EIE (model, `{data.config.eie_workload}` workload), batch 1: {mean('speedup_eie')}x faster than "
        f"CPU dense and {mean('efficiency_eie')}x less energy per layer (geometric means)."
    )
    dump = next((r for r in data.eie_rows if r["layer"].startswith("dump:")), None)
    if dump is not None:
        lines.append(
            f"EIE on the authors' real AlexNet fc8 layer and image: {dump['cycles']:,} cycles "
            f"({dump['time_us']:.2f} us), load efficiency {dump['load_efficiency']:.3f}, useful efficiency "
            f"{dump['useful_efficiency']:.3f}."
        )
    return lines


def predicted_speedups(data: ReportData) -> dict[str, float]:
    """Geometric-mean predicted speedup over cuBLAS fp16 of each kernel form on the report's layers."""
    if data.predicted is None:
        return {}
    predicted = predicted_batch1(data.predicted, data.predicted_machine)
    out = {}
    for form, label in (("fixed", "fixed-width"), ("huffman", "Huffman")):
        ratios = [
            predicted[n]["dense"] / predicted[n][form]
            for n in data.config.layers
            if form in predicted.get(n, {})
        ]
        if ratios:
            out[label] = geometric_mean(ratios)
    return out


def machine_lines(data: ReportData) -> list[str]:
    m = data.machine
    cores, load = int(m["cpu_cores"]), float(m["load_avg_1min"])
    busy = (
        f" CPU timings are noisy: a load average of {load:.1f} on {cores} cores means other processes "
        "competed for the cores while they were measured."
        if load >= 0.75 * cores
        else ""
    )
    lines = [
        f"CPU: {m['cpu']}, {cores} cores; the CPU layers ran on {data.cpu_rows[0]['threads']} thread(s); "
        f"load average {load:.2f} at the start.{busy}",
        f"Software: Python {m['python']}, torch {m['torch']}, NumPy {m['numpy']}, Triton {m['triton']}.",
        data.gpu_note,
        f"Power, CPU: {data.cpu_power.label()}.",
    ]
    if data.gpu_power is not None:
        lines.append(f"Power, GPU: {data.gpu_power.label()}.")
    elif data.gpu is not None:
        lines.append(
            f"Power, GPU: unknown for {data.gpu.gpu} (pass --gpu-watts); GPU energies are not shown."
        )
    lines.append(
        "Energy, EIE: from the model (`eie_model.energy`, table `module`: the per-PE module power of the "
        "EIE paper's Table II, 45 nm, 800 MHz, as counts x energy per access plus clock and leakage; "
        "sparse-matrix line reads scaled by width with CACTI's figures for the 128 KB SRAM; no multiplier "
        "or accumulator energy for padding entries); the EIE table also gives time x the paper's 0.59 W "
        "chip power."
    )
    lines.append(f"EIE design point: {eie_design_note(data)}.")
    if data.config.eie_dump is None:
        lines.append(
            "EIE authors' AlexNet fc8 dump: not given (`--eie-dump DIR` or the EIE_DUMP environment "
            "variable), so the report has no real-data EIE row."
        )
    return lines


HOW_TO_READ = (
    "Each row is one of the nine FC layers of the EIE paper's Table III (AlexNet fc6-8, VGG-16 fc6-8, "
    "NeuralTalk), as a random layer with the paper's shape and weight density.",
    "Time is for one input vector (batch 1), the memory-bound case the compressed formats are made for. "
    "Speedup and energy efficiency divide the CPU dense figure by the platform's: above 1 is better.",
    "EIE also skips zero input activations (the paper's activation densities); the CPU and GPU kernels "
    "multiply every input, as in the paper's comparison.",
    "Energy of a CPU or GPU = its time x its power figure; an `estimate` is a TDP share (an upper bound "
    "for batch 1), `measured` comes from the package energy counter.",
    "Compression: dense float32 -> pruned -> quantized (weight sharing) -> Huffman, exact encoded bits.",
)


def build_document(
    data: ReportData, frame: pd.DataFrame, tables: list[Table], plots: dict, command: str
) -> list[Block]:
    by_key = {t.key: t for t in tables}
    m = data.machine
    blocks = [
        Block("paragraph", f"Generated {m['date']} at commit {m['commit']} by `{command}`."),
        Block("heading", "Summary"),
        Block("list", items=tuple(summary(data, frame))),
        Block("heading", "Machine and sources"),
        Block("list", items=tuple(machine_lines(data))),
        Block("heading", "How to read this report"),
        Block("list", items=HOW_TO_READ),
        Block("heading", "Per layer, batch 1"),
        Block("table", table=by_key["time"]),
        Block("table", table=by_key["speedup"]),
        Block("image", "speedup", caption="Speedup over CPU dense (log axis)"),
        Block("table", table=by_key["energy"]),
        Block("table", table=by_key["efficiency"]),
        Block("image", "energy_efficiency", caption="Energy efficiency over CPU dense (log axis)"),
        *_predicted_blocks(data, by_key),
        Block("heading", "Compression"),
        Block("table", table=by_key["compression"]),
        Block("image", "compression_waterfall", caption="Compression waterfall"),
    ]
    if "cpu_batch64" in by_key:
        blocks += [Block("heading", "CPU at batch 64"), Block("table", table=by_key["cpu_batch64"])]
    blocks += [
        Block("heading", "EIE"),
        Block("table", table=by_key["eie"]),
        Block("table", table=by_key["eie_workloads"]),
    ]
    for sweep in data.sweeps:
        key, title, _ = SWEEP_FIGURES[sweep]
        blocks += [Block("table", table=t) for t in tables if t.key.startswith(f"sweep_{sweep}_")]
        blocks.append(Block("image", key, caption=f"{title} (workload {data.config.eie_workload})"))
    if "pipeline" in by_key:
        blocks += [Block("heading", "Pipeline throughput (CPU)"), Block("table", table=by_key["pipeline"])]
    if "model" in by_key:
        blocks += [Block("heading", "Whole model (CPU)"), Block("table", table=by_key["model"])]
    if data.digits is not None:
        blocks.append(Block("heading", "The digits network (LeNet-300-100 on scikit-learn's digits)"))
        blocks.append(Block("list", items=tuple(data.digits.summary())))
        blocks += [Block("table", table=t) for t in data.digits.tables()]
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in data.phase_seconds.items())
    blocks += [Block("heading", "Run"), Block("paragraph", f"Phases: {seconds}.")]
    return blocks


def _predicted_blocks(data: ReportData, by_key: dict) -> list[Block]:
    """The section of GPU predictions, apart from the measured platforms."""
    blocks = [
        Block("heading", "GPU, predicted from the compiled code (not measured)"),
        Block("paragraph", data.predicted_note),
    ]
    if "gpu_predicted" in by_key:
        blocks.append(Block("table", table=by_key["gpu_predicted"]))
    return blocks


def render_markdown_document(blocks: list[Block], plots: dict) -> str:
    lines = [f"# {TITLE}", ""]
    for block in blocks:
        if block.kind == "heading":
            lines += [f"## {block.text}", ""]
        elif block.kind == "paragraph":
            lines += [block.text, ""]
        elif block.kind == "list":
            lines += [*(f"- {item}" for item in block.items), ""]
        elif block.kind == "table":
            lines += [render_markdown(block.table), ""]
        elif block.kind == "image" and block.text in plots:
            lines += [f"![{block.caption}]({plots[block.text].name})", ""]
    return "\n".join(lines)
