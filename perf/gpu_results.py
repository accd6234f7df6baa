"""Read the GPU results committed under ``perf/results/`` (written by ``bash perf/gpu_check.sh``).

A results folder holds what the GPU scripts write into one output folder. Both CSVs carry the
same provenance columns in every row (`perf.harness.gpu_run_info`: ``gpu``, ``torch``,
``triton``, ``commit``, ``date``, ...) and the same timer (`perf.gpu_timing`):

* ``results.csv`` (`perf/bench_gpu.py`): one row per layer, code/index widths and batch with,
  among others, ``ours_cold_us`` (the fixed-width Triton kernel) and ``cublas_fp16_cold_us``,
  ``cublas_fp32_cold_us`` (dense ``F.linear``), timed with L2 flushed before every call;
* ``huffman_gpu.csv`` (`perf/bench_gpu_huffman.py`): rows of ``layer``, ``bits``, ``kernel``
  (``huffman``, ``fixed``, ``cublas_fp16``, ``huffman_decode``), ``batch``, ``variant`` (the
  Huffman layout's), ``us_cold``, ``us_warm``; layout variants time only the Huffman kernel, so
  the default layout is the one whose rows include the ``fixed`` kernel;
* ``env.json``, ``log.txt``, ``correctness.csv``, ``crossover.csv``, ``sweep.csv`` (not needed
  for the report).

A folder counts when either CSV has rows from a real GPU (the ``--small`` dry run of either
script names its device ``cpu-interpreter-...`` and is ignored). The newest folder (by the
``date`` of its rows) is the one the report shows. Per paper layer at batch 1 it takes: GPU
dense = cuBLAS float16 and GPU fixed-width from ``results.csv`` (5-bit codes when present, else
4-bit), GPU Huffman from ``huffman_gpu.csv`` (same code width when present); a column missing
from ``results.csv`` falls back to the ``huffman_gpu.csv`` rows of the same run.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from perf.harness import DRY_RUN_GPU_PREFIX, REPO_ROOT

RESULTS_ROOT = REPO_ROOT / "perf" / "results"
KERNEL_CSV = "results.csv"
HUFFMAN_CSV = "huffman_gpu.csv"
PREFERRED_CODE_BITS = (5, 4)  # Deep Compression's FC width (as the CPU benchmark), then EIE's


class GpuResultsError(ValueError):
    """A results folder that holds no usable GPU rows, or rows without a needed column."""


@dataclass(frozen=True)
class GpuLayerTimes:
    """Batch-1 microseconds (L2 flushed before each call) of one layer; None where not measured."""

    dense_us: float | None = None
    fixed_us: float | None = None
    huffman_us: float | None = None
    dense_fp32_us: float | None = None
    fixed_bits_per_weight: float | None = None
    huffman_bits_per_weight: float | None = None


@dataclass(frozen=True)
class GpuResults:
    """The batch-1 GPU times of one results folder, with its provenance."""

    folder: Path
    gpu: str
    date: str
    commit: str
    torch: str
    triton: str
    code_bits: int | None
    layers: dict[str, GpuLayerTimes]
    sources: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.gpu}, measured {self.date} at commit {self.commit} (torch {self.torch}, triton "
            f"{self.triton}), {self.code_bits}-bit codes; folder {self.folder}"
        )


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _read_rows(path: Path) -> list[dict]:
    """The CSV's rows from a real GPU (dry-run and GPU-less rows dropped); [] if absent."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GpuResultsError(f"{path}: unreadable CSV ({exc})") from exc
    return [r for r in rows if (r.get("gpu") or "").strip() and not r["gpu"].startswith(DRY_RUN_GPU_PREFIX)]


def _int(row: dict, key: str) -> int | None:
    number = _number(row.get(key))
    return None if number is None else int(number)


def _require(rows: list[dict], columns: tuple[str, ...], path: Path) -> None:
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise GpuResultsError(f"{path}: missing columns {missing}")


def read_gpu_results(folder: str | Path) -> GpuResults:
    """The batch-1 times of the paper's layers in ``folder`` (see the module docstring)."""
    folder = Path(folder)
    kernel_rows = _read_rows(folder / KERNEL_CSV)
    huffman_rows = _read_rows(folder / HUFFMAN_CSV)
    if not kernel_rows and not huffman_rows:
        raise GpuResultsError(f"{folder}: no GPU rows in {KERNEL_CSV} or {HUFFMAN_CSV}")
    if kernel_rows:
        _require(
            kernel_rows,
            ("layer", "code_bits", "batch", "ours_cold_us", "cublas_fp16_cold_us"),
            folder / KERNEL_CSV,
        )
    if huffman_rows:
        _require(
            huffman_rows,
            ("layer", "bits", "kernel", "batch", "variant", "us_cold"),
            folder / HUFFMAN_CSV,
        )

    def pick_bits(rows: list[dict], key: str) -> int | None:
        present = {_int(r, key) for r in rows}
        return next(
            (b for b in PREFERRED_CODE_BITS if b in present), min((b for b in present if b), default=None)
        )

    code_bits = pick_bits(kernel_rows, "code_bits") if kernel_rows else pick_bits(huffman_rows, "bits")
    kernel = {
        r["layer"]: r for r in kernel_rows if _int(r, "batch") == 1 and _int(r, "code_bits") == code_bits
    }
    huffman_bits = (
        code_bits
        if any(_int(r, "bits") == code_bits for r in huffman_rows)
        else pick_bits(huffman_rows, "bits")
    )
    full_variants = {r["variant"] for r in huffman_rows if r["kernel"] == "fixed"}
    huffman: dict[tuple[str, str], dict] = {
        (r["layer"], r["kernel"]): r
        for r in huffman_rows
        if _int(r, "batch") == 1 and _int(r, "bits") == huffman_bits and r["variant"] in full_variants
    }
    sources = {}
    if kernel:
        sources["dense"] = f"{KERNEL_CSV}: cublas_fp16_cold_us (cuBLAS float16, batch 1, L2 flushed)"
        sources["fixed"] = f"{KERNEL_CSV}: ours_cold_us ({code_bits}-bit codes, batch 1, L2 flushed)"
    elif huffman:
        sources["dense"] = f"{HUFFMAN_CSV}: kernel cublas_fp16, us_cold (batch 1, L2 flushed)"
        sources["fixed"] = f"{HUFFMAN_CSV}: kernel fixed, us_cold ({huffman_bits}-bit codes, batch 1)"
    if huffman:
        sources["huffman"] = f"{HUFFMAN_CSV}: kernel huffman, us_cold ({huffman_bits}-bit codes, batch 1)"
    layers = {}
    for name in dict.fromkeys([*kernel, *(layer for layer, _ in huffman)]):
        k = kernel.get(name, {})
        h = {kind: huffman.get((name, kind), {}) for kind in ("huffman", "fixed", "cublas_fp16")}
        dense = _number(k.get("cublas_fp16_cold_us"))
        fixed = _number(k.get("ours_cold_us"))
        layers[name] = GpuLayerTimes(
            dense_us=dense if dense is not None else _number(h["cublas_fp16"].get("us_cold")),
            fixed_us=fixed if fixed is not None else _number(h["fixed"].get("us_cold")),
            huffman_us=_number(h["huffman"].get("us_cold")),
            dense_fp32_us=_number(k.get("cublas_fp32_cold_us")),
            fixed_bits_per_weight=_number(k.get("bits_per_weight"))
            or _number(h["huffman"].get("fixed_bits_per_weight")),
            huffman_bits_per_weight=_number(h["huffman"].get("huffman_bits_per_weight")),
        )
    first = (kernel_rows or huffman_rows)[0]
    dates = [r.get("date", "") for r in kernel_rows + huffman_rows]
    return GpuResults(
        folder=folder,
        gpu=first["gpu"],
        date=max(dates) if any(dates) else folder.name,
        commit=first.get("commit", "unknown"),
        torch=first.get("torch", "unknown"),
        triton=first.get("triton", "unknown"),
        code_bits=code_bits,
        layers=layers,
        sources=sources,
    )


def result_folders(root: str | Path = RESULTS_ROOT) -> list[Path]:
    """Folders under ``root`` (at any depth) holding a GPU script's CSV."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.parent for name in (KERNEL_CSV, HUFFMAN_CSV) for p in root.rglob(name)}
    return sorted(found)


def newest_gpu_results(root: str | Path = RESULTS_ROOT) -> GpuResults | None:
    """The newest readable GPU results under ``root``, or None when there are none. Folders that
    hold only dry-run rows are skipped; a malformed folder raises `GpuResultsError`."""
    results = []
    for folder in result_folders(root):
        try:
            results.append(read_gpu_results(folder))
        except GpuResultsError as exc:
            if "no GPU rows" not in str(exc):
                raise
    if not results:
        return None
    return max(results, key=lambda r: (r.date, str(r.folder)))
