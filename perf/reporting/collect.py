"""Collect the report's numbers: CPU measured now, GPU results read from disk, EIE simulated now.

`collect` runs the phases in order with progress lines and returns a `ReportData`; nothing here
formats or plots. Every layer is a random compressed layer of the paper's shape and weight
density (`workloads.paper_layers`; the trained weights are not public): the CPU benchmark and
the size table share one matrix per layer, EIE draws its own 4-bit layer and input of the
paper's activation density, generated as ``eie_workload`` says (`workloads.eie_workloads`),
plus the EIE authors' real AlexNet fc8 dump as one more layer when its folder is given.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from compress.size import size_table
from eie_model import SWEEPS, EIEConfig
from perf.bench_eie import EieBenchConfig, compare_workloads, run_sweeps, simulate_layers
from perf.bench_pipeline import PipelineBenchConfig, run_pipeline_bench
from perf.cost.compare import machine_for_gpu
from perf.cost.machines import DEFAULT_MACHINE, MACHINES
from perf.cost.predict import RESULTS_DIR as PREDICTIONS_DIR
from perf.cost.predict import Predictions, load_predictions
from perf.gpu_results import RESULTS_ROOT, GpuResults, GpuResultsError, newest_gpu_results, read_gpu_results
from perf.harness import REPO_ROOT, ProgressFn, machine_info
from perf.power import PowerFigure, cpu_power, gpu_power, measure_package_power
from perf.reporting.cpu import CpuConfig, measure_layer
from workloads.paper_layers import PAPER_LAYERS


@dataclass(frozen=True)
class ReportConfig:
    """What the report measures and where it reads the GPU results from.

    ``layers``: paper layer names; ``bits``/``index_bits``: code and relative-index widths of the
    CPU layers and the size table (5 and 5: Deep Compression's FC layers; EIE runs its own 4+4);
    ``quick``: fewer timing repeats and short EIE sweeps on one layer; ``sweeps``: run the EIE
    sweeps at all; ``pipeline_layers``: layers of the pipeline-throughput table (empty: none);
    ``gpu_folder``: read this results folder instead of the newest under ``results_root``, and
    ``gpu_origin`` says how it came to be (``committed`` or ``measured now``); ``cpu_watts`` and
    ``gpu_watts`` replace the power estimates; ``threads``: CPU threads (None: torch's default);
    ``eie_workload``: how EIE's layers are generated (a preset of `workloads.eie_workloads`);
    ``eie_dump``: the EIE authors' dump folder, simulated as its own row and swept (None: not shown);
    ``predictions``: the GPU predictions from the compiled code (`dcomp predict-gpu`; None: none);
    ``model_results``: the committed whole-model benchmark (``python -m perf.bench_model``'s CSV;
    None or a missing file: no such section).
    """

    layers: tuple[str, ...] = tuple(PAPER_LAYERS)
    bits: int = 5
    index_bits: int = 5
    seed: int = 0
    quick: bool = False
    sweeps: bool = True
    pipeline_layers: tuple[str, ...] = ("alex7",)
    results_root: Path = RESULTS_ROOT
    gpu_folder: Path | None = None
    gpu_origin: str = "committed"
    cpu_watts: float | None = None
    gpu_watts: float | None = None
    threads: int | None = None
    eie_workload: str = "fc8-stats"
    eie_dump: Path | None = None
    predictions: Path | None = PREDICTIONS_DIR / "predictions.json"
    model_results: Path | None = RESULTS_ROOT / "model" / "bench_model.csv"

    def __post_init__(self) -> None:
        unknown = [n for n in (*self.layers, *self.pipeline_layers) if n not in PAPER_LAYERS]
        if unknown or not self.layers:
            raise ValueError(
                f"layers must be paper layers ({', '.join(PAPER_LAYERS)}), got {list(self.layers)}"
            )
        if not 1 <= self.bits <= 8 or not 1 <= self.index_bits <= 8:
            raise ValueError(f"bits and index_bits must be in 1..8, got {self.bits} and {self.index_bits}")
        for name in ("cpu_watts", "gpu_watts"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{name} must be a positive number of watts, got {value!r}")
        self.cpu_config()  # validates threads
        self.eie_config()  # validates the workload and the dump folder

    def cpu_config(self) -> CpuConfig:
        fields = {"seed": self.seed, "threads": self.threads}
        return CpuConfig.quick(**fields) if self.quick else CpuConfig(**fields)

    def eie_config(self) -> EieBenchConfig:
        fields = {
            "layers": self.layers,
            "seed": self.seed,
            "workload": self.eie_workload,
            "dump": self.eie_dump,
            "sweeps": tuple(SWEEPS) if self.sweeps else (),
        }
        return EieBenchConfig.quick(**fields) if self.quick else EieBenchConfig(**fields)

    def pipeline_config(self) -> PipelineBenchConfig | None:
        if not self.pipeline_layers:
            return None
        fields = {
            "layers": self.pipeline_layers,
            "bits": self.bits,
            "index_bits": self.index_bits,
            "repeat": 1,
        }
        return PipelineBenchConfig(seed=self.seed, **fields)


@dataclass
class ReportData:
    """Everything the report shows, as measured or read (no formatting)."""

    config: ReportConfig
    machine: dict[str, str]
    cpu_rows: list[dict]
    cpu_power: PowerFigure
    gpu: GpuResults | None
    gpu_note: str
    gpu_power: PowerFigure | None
    eie_config: EIEConfig
    eie_rows: list[dict]
    eie_workload_rows: list[dict]
    sweeps: dict[str, pd.DataFrame]
    sizes: pd.DataFrame
    pipeline_rows: list[dict]
    phase_seconds: dict[str, float] = field(default_factory=dict)
    digits: object | None = None  # a `perf.reporting.digits.DigitsResults` (dcomp run)
    predicted: Predictions | None = None  # predicted from the compiled code, not measured
    predicted_machine: str = DEFAULT_MACHINE
    predicted_note: str = ""
    model_rows: list[dict] = field(default_factory=list)  # read from committed results, not measured now


def read_model_results(path: Path | None) -> list[dict]:
    """The rows of a committed ``bench_model.csv`` (an empty list where there is none)."""
    if path is None or not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compression_sizes(matrices: dict, index_bits: int) -> pd.DataFrame:
    """`compress.size_table` plus the pruning-only stage: the same relative-index entries
    (fillers included) holding float32 values instead of codes, and no codebook."""
    table = size_table(matrices, index_bits)
    entries = table["code_stream_bits_pq"] / table["bits"].where(table["bits"].notna())
    entries.loc["total"] = entries.drop("total").sum()
    row_ptr_bits = table["overhead_bits_pq"] - 32 * table["codebook_size"]
    pruned_bits = 32 * entries + table["index_stream_bits_pq"] + row_ptr_bits
    table["bytes_pruned"] = (pruned_bits / 8).apply(math.ceil)
    table.loc["total", "bytes_pruned"] = table["bytes_pruned"].drop("total").sum()
    table["rate_pruned"] = table["bytes_pruned"] / table["dense_bytes"]
    return table


def _gpu_section(config: ReportConfig) -> tuple[GpuResults | None, str]:
    try:
        if config.gpu_folder is not None:
            results = read_gpu_results(config.gpu_folder)
        else:
            results = newest_gpu_results(config.results_root)
    except GpuResultsError as exc:
        return None, f"GPU results could not be read ({exc}); no GPU numbers are shown."
    if results is None:
        return None, (
            f"No GPU results: no folder under {config.results_root} holds GPU benchmark CSVs, so no GPU "
            "numbers are shown. Run `bash perf/gpu_check.sh` on a GPU machine and commit its output folder "
            "under perf/results/<gpu>_<date>/."
        )
    return results, f"GPU results ({config.gpu_origin}): {results.describe()}."


def _shown_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _predicted_section(config: ReportConfig, gpu: GpuResults | None) -> tuple[Predictions | None, str, str]:
    """(predictions, machine key, note): the machine named like the measured GPU when there is one."""
    machine = (machine_for_gpu(gpu.gpu) if gpu is not None else None) or DEFAULT_MACHINE
    predictions = load_predictions(config.predictions) if config.predictions is not None else None
    if predictions is None:
        return None, machine, "No GPU predictions: run `dcomp predict-gpu` to write them."
    predicted_machines = list(dict.fromkeys(r["machine"] for r in predictions.rows))
    if machine not in predicted_machines:
        machine = predicted_machines[0]
    info = predictions.info
    return (
        predictions,
        machine,
        (
            f"GPU predictions ({info.get('label', 'predicted')}): {MACHINES[machine].name}, "
            f"{info.get('code_bits', '?')}-bit codes, float16 x, from `dcomp predict-gpu` at commit "
            f"{info.get('commit', '?')} with Triton {info.get('triton', '?')} "
            f"({_shown_path(config.predictions)})."
        ),
    )


def collect(config: ReportConfig, progress: ProgressFn | None = None) -> ReportData:
    """Run the report's measurements (see the module docstring)."""
    say = progress or (lambda message: None)
    seconds: dict[str, float] = {}
    machine = machine_info()

    started = time.perf_counter()
    cpu_config = config.cpu_config()
    matrices = {}

    def cpu_phase() -> list[dict]:
        rows = []
        for k, name in enumerate(config.layers, 1):
            matrices[name] = PAPER_LAYERS[name].random_matrix(config.bits, seed=config.seed)
            rows += measure_layer(name, matrices[name], cpu_config)
            b1 = rows[-len(cpu_config.batches)]
            say(
                f"CPU [{k}/{len(config.layers)}] {name}: batch 1 dense {b1['dense_us']:.0f} us, "
                f"compressed {b1['compressed_us']:.0f} us ({b1['speedup']:.2f}x)"
            )
        return rows

    cpu_rows, measured_watts = measure_package_power(cpu_phase)
    power_cpu = cpu_power(
        machine["cpu"], cpu_config.thread_count(), measured=measured_watts, given=config.cpu_watts
    )
    seconds["cpu"] = time.perf_counter() - started

    started = time.perf_counter()
    sizes = compression_sizes(matrices, config.index_bits)
    matrices.clear()  # the dense copies are gone already; free the compressed ones too
    seconds["sizes"] = time.perf_counter() - started
    rate = 1 / sizes.loc["total", "rate_pqh"]
    say(f"sizes: P+Q+H {rate:.1f}x smaller than dense over {len(config.layers)} layers")

    gpu, gpu_note = _gpu_section(config)
    power_gpu = gpu_power(gpu.gpu, given=config.gpu_watts) if gpu is not None else None
    say(gpu_note)
    predicted, predicted_machine, predicted_note = _predicted_section(config, gpu)

    started = time.perf_counter()
    eie_config = config.eie_config()
    eie_rows = simulate_layers(eie_config, say)
    eie_workload_rows = compare_workloads(eie_config, say, eie_rows)
    seconds["eie"] = time.perf_counter() - started
    started = time.perf_counter()
    sweeps = run_sweeps(eie_config, say)
    seconds["eie_sweeps"] = time.perf_counter() - started

    started = time.perf_counter()
    pipeline_config = config.pipeline_config()
    pipeline_rows = run_pipeline_bench(pipeline_config, say) if pipeline_config is not None else []
    seconds["pipeline"] = time.perf_counter() - started

    return ReportData(
        config=config,
        machine=machine,
        cpu_rows=cpu_rows,
        cpu_power=power_cpu,
        gpu=gpu,
        gpu_note=gpu_note,
        gpu_power=power_gpu,
        eie_config=eie_config.eie,
        eie_rows=eie_rows,
        eie_workload_rows=eie_workload_rows,
        sweeps=sweeps,
        sizes=sizes,
        pipeline_rows=pipeline_rows,
        phase_seconds=seconds,
        predicted=predicted,
        predicted_machine=predicted_machine,
        predicted_note=predicted_note,
        model_rows=read_model_results(config.model_results),
    )
