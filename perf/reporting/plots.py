"""The report's figures (PNG, matplotlib's Agg backend): speedups and energy efficiency over CPU
dense (log axes), the compression waterfall, and EIE's sweeps: load and useful efficiency vs FIFO
depth, speedup and useful efficiency vs number of PEs, energy vs SRAM line width and vs z width."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from eie_model.sweep import PARAMETER_WORDS
from perf.reporting.collect import ReportData
from perf.reporting.tables import BASELINE, PLATFORMS, STAGES, geometric_mean, platform_watts, platforms

COLORS = {
    "cpu_compressed": "tab:blue",
    "gpu_dense": "tab:gray",
    "gpu_fixed": "tab:green",
    "gpu_huffman": "tab:olive",
    "eie": "tab:red",
}
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_log_axis(axis) -> None:
    """Log-scale tick labels as plain numbers (1, 10, 100) rather than powers; no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    base = axis.get_transform().base
    # Base 10: 1, 2, 5, 10, ...; base 2: the powers of two alone (1, 2, 4, 8: more would overlap).
    axis.set_major_locator(LogLocator(base=base, subs=(1.0, 2.0, 5.0) if base == 10 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def log_bars(ax, x, values, width: float, **style) -> None:
    """Bars on a log axis that hang from 1: a value above 1 rises from 1, one below 1 goes down
    from it; each bar is labelled with its value (None or NaN: no bar). The axis range covers the
    bars, 1 and room for the labels."""
    heights = np.array([np.nan if v is None else float(v) for v in values])
    ax.bar(x, heights - 1, width, bottom=1.0, **style)
    for position, height in zip(x, heights):
        if np.isfinite(height):
            up = height >= 1
            ax.annotate(
                _times(height), (position, height), xytext=(0, 2 if up else -2), textcoords="offset points",
                ha="center", va="bottom" if up else "top", fontsize=7,
            )  # fmt: skip
    ax.margins(y=0.12)


def _times(value: float) -> str:
    """A ratio as a bar label: 0.42x, 3.5x, 43.1x, 2,210x."""
    return f"{value:,.0f}x" if value >= 100 else f"{value:.3g}x"


def _bars(
    frame: pd.DataFrame, keys: list[str], prefix: str, ylabel: str, title: str, path: Path, note: str = ""
) -> Path:
    """Grouped bars per layer (and their geometric mean) for each of ``keys``, hanging from 1
    (= CPU dense) on a log axis; ``note`` is printed under the axes."""
    plt = _pyplot()
    labels = [*frame.index, "geo. mean"]
    fig, ax = plt.subplots(figsize=(max(8.0, 1.1 * len(labels) + 4), 4.8))
    ax.set_yscale("log")
    width = 0.8 / len(keys)
    x = np.arange(len(labels))
    for i, key in enumerate(keys):
        values = [frame.loc[name, f"{prefix}{key}"] for name in frame.index]
        values.append(geometric_mean(values))
        offset = x + (i - (len(keys) - 1) / 2) * width
        log_bars(ax, offset, values, width, label=PLATFORMS[key], color=COLORS.get(key))
    ax.axhline(1.0, color="black", linewidth=0.8)
    _plain_log_axis(ax.yaxis)
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if note:
        fig.text(0.01, 0.01, note, fontsize=7.5, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def compression_waterfall(data: ReportData, path: Path) -> Path:
    """Left: the total size over the layers stepping down stage by stage (log axis), each step
    labelled with its factor. Right: each layer's compression rate after each stage."""
    plt = _pyplot()
    sizes = data.sizes
    column = {"dense": "dense_bytes", "pruned": "bytes_pruned", "pq": "bytes_pq", "pqh": "bytes_pqh"}
    total = [float(sizes.loc["total", column[s]]) / 1e6 for s in STAGES]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.4]})
    floor = total[-1] / 3
    left.bar(0, total[0] - floor, bottom=floor, color="tab:gray")
    left.text(0, total[0] * 1.1, f"{total[0]:.3g} MB", ha="center", fontsize=8)
    steps = [("pruning", "tab:orange"), ("quantization", "tab:purple"), ("Huffman", "tab:cyan")]
    for i, (_, color) in enumerate(steps, 1):
        left.bar(i, total[i - 1] - total[i], bottom=total[i], color=color)
        left.text(i, total[i - 1] * 1.1, f"÷{total[i - 1] / total[i]:.2g}", ha="center", fontsize=8)
    left.bar(4, total[-1] - floor, bottom=floor, color="tab:green")
    left.text(
        4,
        total[-1] * 1.1,
        f"{total[-1]:.3g} MB\n{total[0] / total[-1]:.0f}x smaller",
        ha="center",
        fontsize=8,
    )
    left.set_yscale("log")
    _plain_log_axis(left.yaxis)
    left.set_ylim(floor, total[0] * 2.5)
    left.set_xticks(range(5), ["dense", "pruning", "quantization", "Huffman", "compressed"], rotation=20)
    left.set_ylabel("MB (all layers)")
    left.set_title(f"Compression waterfall, {len(data.config.layers)} layers")
    names = list(data.config.layers)
    x = np.arange(len(names))
    stages = [("pruned", "pruned"), ("pq", "+ quantized"), ("pqh", "+ Huffman")]
    right.set_yscale("log")
    for i, (stage, label) in enumerate(stages):
        rates = [1 / float(sizes.loc[n, f"rate_{stage}"]) for n in names]
        log_bars(right, x + (i - 1) * 0.27, rates, 0.27, label=label, color=steps[i][1])
    _plain_log_axis(right.yaxis)
    right.set_xticks(x, names, rotation=30, ha="right")
    right.set_ylabel("x smaller than dense float32")
    right.set_title("Per layer")
    right.grid(True, axis="y", which="major", alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class SweepPanel:
    """One panel of a sweep figure: ``column`` of the sweep table against the swept value;
    ``relative_to``: divide each layer's curve by its value there; ``ideal``: a log2 axis with
    the linear-speedup line."""

    column: str
    ylabel: str
    relative_to: int | None = None
    ideal: bool = False


def sweep_plot(table: pd.DataFrame, panels: tuple[SweepPanel, ...], title: str, path: Path) -> Path:
    """One line per layer against the swept parameter (log2 axis), one panel per column."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    values = sorted(table["value"].unique())
    for ax, panel in zip(axes[0], panels):
        for name, group in table.groupby("benchmark", sort=False):
            y = group[panel.column].to_numpy(dtype=float)
            if panel.relative_to is not None:
                y = y / float(group.loc[group["value"] == panel.relative_to, panel.column].iloc[0])
            ax.plot(group["value"], y, marker="o", label=name)
        if panel.ideal:
            ax.plot(values, [v / values[0] for v in values], "k--", linewidth=0.8, label="ideal (linear)")
            ax.set_yscale("log", base=2)
            _plain_log_axis(ax.yaxis)
        if panel.relative_to is not None:
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
        parameter = str(table["parameter"].iloc[0])
        ax.set_xlabel(PARAMETER_WORDS.get(parameter, parameter))
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


#: Sweep -> (plot key, title, panels) of its figure.
SWEEP_FIGURES: dict[str, tuple[str, str, tuple[SweepPanel, ...]]] = {
    "fifo": (
        "eie_fifo",
        "EIE: efficiency vs FIFO depth",
        (
            SweepPanel("load_efficiency", "load efficiency (ideal / actual cycles)"),
            SweepPanel("useful_efficiency", "useful efficiency (real MACs / (cycles x PEs))"),
        ),
    ),
    "pes": (
        "eie_pes",
        "EIE: scaling with the number of PEs",
        (
            SweepPanel("speedup", "speedup over the fewest PEs (x, log axis)", ideal=True),
            SweepPanel("useful_efficiency", "useful efficiency (real MACs / (cycles x PEs))"),
        ),
    ),
    "sram-width": (
        "eie_sram_width",
        "EIE: energy vs sparse-matrix SRAM line width",
        (
            SweepPanel("spmat_read_uj", "SRAM read energy / at 64-bit lines", relative_to=64),
            SweepPanel("energy_uj", "layer energy / at 64-bit lines", relative_to=64),
        ),
    ),
    "index-bits": (
        "eie_index_bits",
        "EIE: energy vs z (relative row index) width",
        (
            SweepPanel("padding_share", "padding entries / entries"),
            SweepPanel("energy_uj", "layer energy / at 4-bit z", relative_to=4),
        ),
    ),
}


def write_plots(data: ReportData, frame: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Every figure the data allows; key -> PNG path."""
    keys = [k for k in platforms(data) if k != BASELINE]
    watts = platform_watts(data)
    # A platform timed under the baseline's own power figure has an energy ratio equal to its
    # speedup: the energy plot leaves it out rather than draw the speedup plot's bars again.
    same_power = [k for k in keys if k in watts and watts[k] == watts[BASELINE]]
    note = ""
    if same_power:
        names = ", ".join(PLATFORMS[k] for k in same_power)
        note = (
            f"Not shown: {names}, whose energy is its time x the same power figure as CPU dense's, so its "
            "energy ratio equals its speedup (see the speedup plot)."
        )
    plots = {
        "speedup": _bars(
            frame,
            keys,
            "speedup_",
            "speedup over CPU dense (x, log axis)",
            "Batch-1 speedup over CPU dense",
            out / "speedup.png",
        ),
        "energy_efficiency": _bars(
            frame,
            [k for k in keys if k not in same_power],
            "efficiency_",
            "energy efficiency over CPU dense (x, log axis)",
            "Energy per layer: CPU dense / platform",
            out / "energy_efficiency.png",
            note,
        ),
        "compression_waterfall": compression_waterfall(data, out / "compression_waterfall.png"),
    }
    workload = data.config.eie_workload
    for sweep, table in data.sweeps.items():
        key, title, panels = SWEEP_FIGURES[sweep]
        usable = tuple(p for p in panels if p.relative_to is None or p.relative_to in set(table["value"]))
        plots[key] = sweep_plot(table, usable, f"{title} (workload {workload})", out / f"{key}.png")
    return plots
