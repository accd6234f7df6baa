"""The report's numbers as tables: one per-layer frame (also the main CSV) and the titled tables
the markdown and HTML pages show. Rendering to text lives here too (`render_markdown`,
`format_number`); the HTML page renders the same `Table` objects."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from perf.cost import PREDICTED_LABEL
from perf.cost.compare import compare, predicted_batch1
from perf.harness import write_csv
from perf.reporting.collect import ReportData
from workloads.eie_workloads import get_workload

#: Platform key -> column label. GPU platforms appear only when GPU results exist.
PLATFORMS: dict[str, str] = {
    "cpu_dense": "CPU dense",
    "cpu_compressed": "CPU compressed",
    "gpu_dense": "GPU dense (cuBLAS fp16)",
    "gpu_fixed": "GPU fixed-width",
    "gpu_huffman": "GPU Huffman",
    "eie": "EIE (model)",
}
GPU_PLATFORMS = ("gpu_dense", "gpu_fixed", "gpu_huffman")
BASELINE = "cpu_dense"
STAGES = {"dense": "dense", "pruned": "pruned", "pq": "quantized", "pqh": "Huffman"}


@dataclass(frozen=True)
class Table:
    """A titled table: ``frame``'s index labels the rows; ``note`` is shown under it."""

    key: str
    title: str
    frame: pd.DataFrame
    note: str = ""


def platforms(data: ReportData) -> list[str]:
    """The platforms with numbers in this report, in display order."""
    keys = [k for k in PLATFORMS if k not in GPU_PLATFORMS or data.gpu is not None]
    if data.gpu is not None:
        measured = {
            "gpu_dense": any(t.dense_us is not None for t in data.gpu.layers.values()),
            "gpu_fixed": any(t.fixed_us is not None for t in data.gpu.layers.values()),
            "gpu_huffman": any(t.huffman_us is not None for t in data.gpu.layers.values()),
        }
        keys = [k for k in keys if measured.get(k, True)]
    return keys


def platform_watts(data: ReportData) -> dict[str, float]:
    """The power figure each measured platform's energy is its time times (EIE's energy comes
    from its own model instead): one CPU figure for both CPU runs, one GPU figure for the GPU's."""
    watts = {"cpu_dense": data.cpu_power.watts, "cpu_compressed": data.cpu_power.watts}
    if data.gpu_power is not None:
        watts.update(dict.fromkeys(GPU_PLATFORMS, data.gpu_power.watts))
    return watts


def _gpu_times(data: ReportData, name: str) -> dict[str, float]:
    if data.gpu is None or name not in data.gpu.layers:
        return {}
    times = data.gpu.layers[name]
    return {"gpu_dense": times.dense_us, "gpu_fixed": times.fixed_us, "gpu_huffman": times.huffman_us}


def layer_frame(data: ReportData) -> pd.DataFrame:
    """One row per layer: batch-1 times (us), speedups over CPU dense, energies (uJ), energy
    efficiency over CPU dense, compression rates (x smaller) and the CPU batch-64 times."""
    keys = platforms(data)
    cpu = {(r["layer"], r["batch"]): r for r in data.cpu_rows}
    eie = {r["layer"]: r for r in data.eie_rows}
    watts = platform_watts(data)
    rows = []
    for name in data.config.layers:
        b1, b64 = cpu[(name, 1)], cpu.get((name, 64))
        times = {
            "cpu_dense": b1["dense_us"],
            "cpu_compressed": b1["compressed_us"],
            "eie": eie[name]["time_us"],
        }
        times.update(_gpu_times(data, name))
        energy = {k: times[k] * watts[k] if times.get(k) is not None and k in watts else None for k in keys}
        energy["eie"] = eie[name]["energy_uj"]
        row = {"layer": name}
        row.update({f"{k}_us": times.get(k) for k in keys})
        row.update({f"speedup_{k}": _ratio(times[BASELINE], times.get(k)) for k in keys if k != BASELINE})
        row.update({f"energy_{k}_uj": energy.get(k) for k in keys})
        row.update(
            {f"efficiency_{k}": _ratio(energy[BASELINE], energy.get(k)) for k in keys if k != BASELINE}
        )
        sizes = data.sizes.loc[name]
        row.update({f"rate_{s}": 1 / sizes[f"rate_{s}"] for s in ("pruned", "pq", "pqh")})
        if b64 is not None:
            row.update(
                cpu_dense_b64_us=b64["dense_us"],
                cpu_compressed_b64_us=b64["compressed_us"],
                speedup_cpu_b64=b64["speedup"],
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return numerator / denominator


def geometric_mean(values) -> float | None:
    finite = [float(v) for v in values if v is not None and np.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(finite)))) if finite else None


def _with_geomean(frame: pd.DataFrame) -> pd.DataFrame:
    means = {c: geometric_mean(frame[c]) for c in frame.columns}
    return pd.concat([frame, pd.DataFrame([means], index=["geo. mean"])])


def build_tables(data: ReportData, frame: pd.DataFrame) -> list[Table]:
    """The titled tables of the report, in page order (digits tables come from `digits`)."""
    keys = platforms(data)
    label = {k: PLATFORMS[k] for k in keys}
    others = [k for k in keys if k != BASELINE]
    tables = [
        Table(
            "time",
            "Time per layer, batch 1 (us)",
            frame[[f"{k}_us" for k in keys]].set_axis([label[k] for k in keys], axis=1),
            "CPU: medians measured now (float32). "
            + (
                "GPU: the results folder named above (float16 inputs, L2 flushed before each call). "
                if data.gpu
                else ""
            )
            + f"EIE: cycles of the model / clock (`{data.config.eie_workload}` workload). Lower is better.",
        ),
        Table(
            "speedup",
            "Speedup over CPU dense, batch 1 (x)",
            _with_geomean(
                frame[[f"speedup_{k}" for k in others]].set_axis([label[k] for k in others], axis=1)
            ),
            "CPU dense time / platform time; above 1 is faster than the dense layer on this CPU.",
        ),
        Table(
            "energy",
            "Energy per layer, batch 1 (uJ)",
            frame[[f"energy_{k}_uj" for k in keys]].set_axis([label[k] for k in keys], axis=1),
            "CPU and GPU: time x the power figure above (estimates are labelled there). EIE: the model's "
            f"energy (dynamic + clock + leakage) on the `{data.config.eie_workload}` workload.",
        ),
        Table(
            "efficiency",
            "Energy efficiency over CPU dense (x)",
            _with_geomean(
                frame[[f"efficiency_{k}" for k in others]].set_axis([label[k] for k in others], axis=1)
            ),
            "CPU dense energy / platform energy; above 1 uses less energy per layer.",
        ),
        compression_table(data),
    ]
    if "cpu_dense_b64_us" in frame:
        tables.append(
            Table(
                "cpu_batch64",
                "CPU at batch 64 (us per batch)",
                frame[["cpu_dense_b64_us", "cpu_compressed_b64_us", "speedup_cpu_b64"]].set_axis(
                    ["CPU dense", "CPU compressed", "speedup"], axis=1
                ),
                "CompressedLinear switches to decode + dense GEMM where batch x density is large "
                "(dc_kernels.cpu.launch).",
            )
        )
    predicted = predicted_table(data)
    if predicted is not None:
        tables.append(predicted)
    tables += [eie_table(data), workload_table(data)]
    tables += sweep_tables(data)
    if data.pipeline_rows:
        pipeline = pd.DataFrame(data.pipeline_rows)
        pivot = pipeline.pivot(index="stage", columns="layer", values="mweights_per_s")
        pivot = pivot.reindex(list(dict.fromkeys(pipeline["stage"])))
        tables.append(
            Table(
                "pipeline",
                "Pipeline throughput (M weights/s)",
                pivot,
                "One run per stage on a Gaussian layer of the paper's shape; prune counts dense weights, the "
                "other stages kept weights.",
            )
        )
    if data.model_rows:
        tables.append(model_table(data.model_rows))
    return tables


def model_table(rows: list[dict]) -> Table:
    """The whole-model benchmark's rows (committed, `perf.bench_model`): speed and bytes per form."""
    frame = pd.DataFrame(rows)
    frame.index = [f"{r['model']}, density {r['density']}, batch {r['batch']}" for r in rows]
    columns = {
        "latency_ms": "latency (ms)",
        "speed_vs_dense": "speed vs dense",
        "linear_MB": "Linear MB",
        "model_MB": "model MB",
        "forms": "layer forms",
        "cosine_vs_dense": "cosine vs dense",
    }
    shown = frame[list(columns)].rename(columns=columns)
    for column in ("latency (ms)", "speed vs dense", "Linear MB", "model MB", "cosine vs dense"):
        shown[column] = shown[column].astype(float).round(3)
    first = rows[0]
    return Table(
        "model",
        "Whole model on the CPU (committed results of python -m perf.bench_model)",
        shown,
        f"MiniLM-shaped encoder in plain torch, random weights, {first['seq_len']} tokens per sequence, "
        f"{first['threads']} thread(s), measured {first.get('date', '')} at commit {first.get('commit', '')} "
        f"on {first.get('cpu', '')} (load average {first.get('load_avg_before', '')}); not measured by this "
        "run.",
    )


def predicted_table(data: ReportData) -> Table | None:
    """GPU, predicted from the compiled code (batch 1, us), apart from the measured tables; with
    measured GPU results, each measured time beside its prediction and their ratio."""
    if data.predicted is None:
        return None
    machine = data.predicted_machine
    predicted = predicted_batch1(data.predicted, machine)
    layers = [name for name in data.config.layers if name in predicted]
    if not layers:
        return None
    columns = {
        "cuBLAS fp16, predicted": [predicted[n].get("dense") for n in layers],
        "fixed-width, predicted": [predicted[n].get("fixed") for n in layers],
        "Huffman, predicted": [predicted[n].get("huffman") for n in layers],
        "fixed-width bound": [predicted[n].get("fixed_bound") for n in layers],
        "Huffman bound": [predicted[n].get("huffman_bound") for n in layers],
    }
    note = (
        f"{PREDICTED_LABEL.capitalize()}: the dispatcher's launches compiled for {machine} and bounded by "
        "issue, load/store pipe, L1 gathers, HBM bytes and latency (`dcomp predict-gpu`, "
        "docs/cost_model.md); cuBLAS fp16 = the dense layer's bytes at 88% of the HBM bandwidth."
    )
    if data.gpu is not None:
        measured = {r["layer"]: r for r in compare(data.gpu, data.predicted, machine)}
        for kind, label in (("dense", "cuBLAS fp16"), ("fixed", "fixed-width"), ("huffman", "Huffman")):
            columns[f"{label}, measured / predicted"] = [
                measured.get(n, {}).get(f"{kind}_ratio") for n in layers
            ]
        note += f" Measured / predicted: the GPU results above ({data.gpu.gpu}) over the prediction."
    frame = pd.DataFrame(columns, index=pd.Index(layers, name="layer"))
    return Table("gpu_predicted", f"GPU, {PREDICTED_LABEL}, batch 1 (us)", frame, note)


def compression_table(data: ReportData) -> Table:
    sizes = data.sizes
    # In memory: the CompressedLinear the CPU benchmark ran (its buffers and bias), by layer.
    memory = {r["layer"]: r["compressed_bytes"] for r in data.cpu_rows if r["batch"] == 1}
    memory["total"] = sum(memory.values())
    in_memory = pd.Series({name: memory.get(name) for name in sizes.index}, dtype=float)
    frame = pd.DataFrame(
        {
            "weights": sizes["weights"],
            "density": sizes["density"],
            "dense MB": sizes["dense_bytes"] / 1e6,
            "pruned MB": sizes["bytes_pruned"] / 1e6,
            "quantized MB": sizes["bytes_pq"] / 1e6,
            "Huffman MB (on disk)": sizes["bytes_pqh"] / 1e6,
            "in memory MB": in_memory / 1e6,
            "pruned x": 1 / sizes["rate_pruned"],
            "quantized x": 1 / sizes["rate_pq"],
            "Huffman x": 1 / sizes["rate_pqh"],
            "in memory x": sizes["dense_bytes"] / in_memory,
            "bits/weight P+Q": sizes["weight_bits_pq"] + sizes["index_bits_pq"],
            "bits/weight P+Q+H": sizes["weight_bits_pqh"] + sizes["index_bits_pqh"],
        }
    )
    c = data.config
    return Table(
        "compression",
        "Compression (x = dense float32 size / size)",
        frame,
        f"Random layers at the paper's densities, {c.bits}-bit codes, {c.index_bits}-bit relative indices "
        "(compress.size_table: exact encoded bits, fillers, codebook and row pointers included). pruned: "
        "float32 values in the same sparse format; quantized: P+Q; Huffman: P+Q+H, what a checkpoint "
        "stores (dcomp compress, save_compressed). in memory: the CompressedLinear the CPU benchmark ran "
        "(codes, int16 columns, row pointers, codebook and bias), what the model holds. Uniform random codes "
        "leave Huffman little to gain on the codes; trained layers gain more (see the digits network).",
    )


def eie_design_note(data: ReportData) -> str:
    """The design point, semantics and workload every EIE table and figure of the report uses."""
    e = data.eie_config
    workload = get_workload(data.config.eie_workload)
    return (
        f"{e.pes} PEs, {e.clock_mhz:g} MHz, FIFO depth {e.fifo_depth}, {e.sram_width}-bit SRAM lines, "
        f"{e.weight_bits}-bit weights + {e.index_bits}-bit indices, {e.semantics} semantics; layers "
        f"generated as the `{workload.name}` workload ({workload.source})"
    )


EIE_METRICS_NOTE = (
    "Load efficiency: ideal cycles (entries, padding included, spread over the PEs) / cycles; useful "
    "efficiency: real multiplies / (cycles x PEs), the EIE authors' metric. Energy: the model's "
    "activity-based energy; uJ at chip power: time x the paper's 0.59 W chip power."
)


def eie_table(data: ReportData) -> Table:
    frame = pd.DataFrame(data.eie_rows).set_index("layer")
    has_dump = len(frame) > len(data.config.layers)
    frame.index = [f"{name} (real data)" if name.startswith("dump:") else name for name in frame.index]
    columns = {
        "cycles": "cycles",
        "time_us": "time us",
        "theoretical_us": "ideal us",
        "load_efficiency": "load efficiency",
        "useful_efficiency": "useful efficiency",
        "padding_entries": "padding entries",
        "energy_uj": "energy uJ",
        "energy_at_chip_power_uj": "uJ at chip power",
        "power_mw": "power mW",
        "gops": "GOP/s",
        "sim_seconds": "simulated in s",
    }
    dump = " The last row is the EIE authors' real AlexNet fc8 layer and image." if has_dump else ""
    return Table(
        "eie",
        "EIE per layer (cycle-level model)",
        frame[list(columns)].set_axis(list(columns.values()), axis=1),
        f"{eie_design_note(data)}; inputs at the layer's activation density (EIE skips zero activations; "
        f"the CPU and GPU kernels do not).{dump} {EIE_METRICS_NOTE}",
    )


def workload_table(data: ReportData) -> Table:
    """Every layer under every workload preset: time and both efficiencies side by side."""
    rows = pd.DataFrame(data.eie_workload_rows)
    columns = {"time_us": "time us", "load_efficiency": "load eff", "useful_efficiency": "useful eff"}
    parts = []
    for workload, group in rows.groupby("workload", sort=False):
        part = group.set_index("layer")[list(columns)]
        parts.append(part.set_axis([f"{label} ({workload})" for label in columns.values()], axis=1))
    frame = pd.concat(parts, axis=1)
    sources = "; ".join(f"`{w}`: {get_workload(w).source}" for w in dict.fromkeys(rows["workload"]))
    return Table(
        "eie_workloads",
        "EIE per layer by workload",
        frame,
        f"The same design point under each way of generating the layers and inputs ({sources}).",
    )


#: Per sweep: the tables the report shows, as (title, column of the sweep table).
SWEEP_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "fifo": (
        ("Load efficiency vs FIFO depth", "load_efficiency"),
        ("Useful efficiency vs FIFO depth", "useful_efficiency"),
    ),
    "pes": (
        ("Speedup vs number of PEs (over the fewest PEs)", "speedup"),
        ("Useful efficiency vs number of PEs", "useful_efficiency"),
    ),
    "sram-width": (("Energy per layer vs SRAM line width (uJ)", "energy_uj"),),
    "index-bits": (("Energy per layer vs z width (uJ)", "energy_uj"),),
}


def sweep_tables(data: ReportData) -> list[Table]:
    tables = []
    for sweep, table in data.sweeps.items():
        for title, column in SWEEP_TABLES.get(sweep, ((f"EIE sweep {sweep}", "time_us"),)):
            pivot = table.pivot(index="value", columns="benchmark", values=column)
            pivot = pivot[list(dict.fromkeys(table["benchmark"]))]
            pivot.index.name = str(table["parameter"].iloc[0])
            tables.append(
                Table(
                    f"sweep_{sweep}_{column}",
                    title,
                    pivot,
                    f"Other parameters at the design point: {eie_design_note(data)}.",
                )
            )
    return tables


# ------------------------------------------------------------------------------ rendering
def format_number(value) -> str:
    """3 significant digits, thousands as integers; '-' for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if value == 0:
            return "0"
        return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2e}"
    return str(value)


def render_markdown(table: Table) -> str:
    header = ["layer" if table.frame.index.name in (None, "layer") else str(table.frame.index.name)]
    header += [str(c) for c in table.frame.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in table.frame.iterrows():
        cells = [str(label), *(format_number(v) for v in row.tolist())]
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def write_csvs(data: ReportData, frame: pd.DataFrame, out: Path) -> list[Path]:
    """The per-layer frame and the raw measurements, each with the provenance columns."""
    info = dict(data.machine)
    if data.gpu is not None:
        info.update(
            gpu=data.gpu.gpu,
            gpu_date=data.gpu.date,
            gpu_commit=data.gpu.commit,
            gpu_folder=str(data.gpu.folder),
        )
    info.update(cpu_power_w=f"{data.cpu_power.watts:.4g}", cpu_power_kind=data.cpu_power.kind)
    if data.gpu_power is not None:
        info.update(gpu_power_w=f"{data.gpu_power.watts:.4g}", gpu_power_kind=data.gpu_power.kind)
    written = [
        write_csv(out / "report_layers.csv", frame.reset_index().to_dict("records"), info),
        write_csv(out / "cpu.csv", data.cpu_rows, data.machine),
        write_csv(out / "eie_layers.csv", data.eie_rows, data.machine),
        write_csv(out / "eie_workloads.csv", data.eie_workload_rows, data.machine),
        write_csv(out / "compression.csv", data.sizes.reset_index().to_dict("records"), data.machine),
    ]
    for sweep, table in data.sweeps.items():
        written.append(write_csv(out / f"eie_sweep_{sweep}.csv", table.to_dict("records"), data.machine))
    predicted = predicted_table(data)
    if predicted is not None:
        rows = predicted.frame.reset_index().to_dict("records")
        written.append(
            write_csv(
                out / "gpu_predicted.csv", rows, {**data.predicted.info, "machine": data.predicted_machine}
            )
        )
    if data.pipeline_rows:
        written.append(write_csv(out / "pipeline.csv", data.pipeline_rows, data.machine))
    return written
