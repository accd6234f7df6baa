"""What a GPU benchmark run holds: the device and its timer, the progress log with the time budget,
and the output folder with the run's provenance. `perf/bench_gpu.py`, `perf/bench_gpu_huffman.py`
and `perf/bench_gpu_dense_codes.py` run on it, so that their logs, CSV columns, timings and
correctness checks agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from pathlib import Path

import torch

from perf.gpu_timing import COLD_RUNS, GpuTimer
from perf.harness import REPO_ROOT, Progress, gpu_run_info, write_csv
from workloads import LayerSpec

# A dry run (``--small``) on the CPU under Triton's interpreter divides a layer's sides by this and
# takes this many calls per timing (its timings only show that the script runs).
DRY_RUN_SCALE = 64
DRY_RUN_COLD_RUNS = 3


@dataclasses.dataclass(frozen=True)
class GpuRun:
    """A GPU benchmark run. ``info`` (`perf.harness.gpu_run_info` and the timer's settings) is
    written into every CSV row; ``progress`` prints and appends to the log file in ``out_dir``."""

    device: torch.device
    timer: GpuTimer
    progress: Progress
    out_dir: Path
    info: dict[str, str]

    @classmethod
    def open(
        cls,
        out_dir: str | os.PathLike | None,
        device: torch.device | str,
        *,
        log_name: str,
        budget_s: float = math.inf,
        cold_runs: int = COLD_RUNS,
    ) -> GpuRun:
        """A run on ``device`` writing into ``out_dir`` (created; None: `default_out_dir`), logging
        to ``out_dir/log_name``."""
        device = torch.device(device)
        info = gpu_run_info(device)
        out_dir = default_out_dir(info) if out_dir is None else Path(out_dir)
        progress = Progress(log_path=out_dir / log_name, budget_s=budget_s)
        timer = GpuTimer(device, cold_runs=cold_runs, log=progress)
        info.update((k, str(v)) for k, v in timer.describe().items())
        return cls(device, timer, progress, out_dir, info)

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, *, log_name: str, script: str, title: str | None = None
    ) -> GpuRun | None:
        """The run that `add_run_arguments`' options ask for: on the CPU under Triton's
        interpreter with ``--small``, else on CUDA; None (with a message on stderr) when there is
        no CUDA device. ``title``: the run's first progress line names it, the GPU, the versions
        and the output folder."""
        if args.small:
            os.environ["TRITON_INTERPRET"] = "1"
        elif not torch.cuda.is_available():
            print(f"{script}: no CUDA device; use --small for a CPU dry run", file=sys.stderr)
            return None
        device = torch.device("cpu" if args.small else "cuda")
        cold_runs = DRY_RUN_COLD_RUNS if args.small else COLD_RUNS
        run = cls.open(args.out, device, log_name=log_name, budget_s=args.budget, cold_runs=cold_runs)
        if title:
            info = run.info
            versions = f"torch {info['torch']}, triton {info['triton']}"
            run.progress(f"{title} on {info['gpu']} ({versions}); output {run.out_dir}")
        return run

    def warm_and_cold(self, label: str, fns: dict) -> dict[str, tuple[float, float]]:
        """Median warm and cold microseconds of each function (NaN for one whose timing raised,
        logged under ``label``: one failing contender does not stop the others)."""
        times = {}
        for name, fn in fns.items():
            try:
                times[name] = (self.timer.warm(fn).median_us, self.timer.cold(fn).median_us)
            except Exception as exc:
                self.progress(f"{label} {name}: timing failed: {type(exc).__name__}: {exc}")
                times[name] = (float("nan"), float("nan"))
        return times

    def finish(self, table: list[str], summary: list[str], csv_name: str, log_name: str) -> int:
        """Log a results table, the summary (its last line the correctness verdict) and where the
        results went; the exit code: 1 when the verdict is FAILED, else 0."""
        for line in [*table, *summary, f"wrote {self.out_dir / csv_name} and {log_name}"]:
            self.progress(line)
        return 0 if "FAILED" not in summary[-1] else 1

    def save(self, name: str, rows: list[dict]) -> Path:
        """``rows`` as the CSV file ``name`` in the output folder, with the provenance columns."""
        return write_csv(self.out_dir / name, rows, self.info)


def add_run_arguments(parser: argparse.ArgumentParser, budget_s: float, budget_help: str) -> None:
    """The options every GPU benchmark takes: ``--out``, ``--budget`` (seconds) and ``--small``."""
    parser.add_argument("--out", default=None, help="output directory (default perf/results/<gpu>_<date>/)")
    parser.add_argument("--budget", type=float, default=budget_s, help=budget_help)
    parser.add_argument(
        "--small", action="store_true", help="dry run on CPU under TRITON_INTERPRET=1, layers scaled down"
    )


def default_out_dir(info: dict[str, str]) -> Path:
    """``perf/results/<gpu>_<date>/`` for a run's provenance ``info`` (date to the minute, UTC)."""
    date = info["date"][:16].replace(":", "").replace("-", "")
    return REPO_ROOT / "perf" / "results" / f"{re.sub(r'[^A-Za-z0-9]+', '-', info['gpu'])}_{date}"


def dry_run_spec(spec: LayerSpec) -> LayerSpec:
    """``spec`` with its sides divided by `DRY_RUN_SCALE` (at least 3 inputs and 2 outputs), for a
    dry run under Triton's interpreter."""
    return dataclasses.replace(
        spec, inputs=max(spec.inputs // DRY_RUN_SCALE, 3), outputs=max(spec.outputs // DRY_RUN_SCALE, 2)
    )


# (rtol, atol) of a kernel's output against the float64 reference per output dtype: float32
# accumulation, then rounding to the output dtype; atol scales with 1 + the largest |expected|.
TOLERANCES = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 2e-3), torch.bfloat16: (2e-2, 1e-2)}


def matches_reference(out: torch.Tensor, expected: torch.Tensor) -> tuple[bool, float]:
    """Whether ``out`` (a kernel's output, poisoned with NaN before the call) is finite and within
    `TOLERANCES` of ``expected``, and the largest absolute error (inf where not finite)."""
    rtol, atol = TOLERANCES[out.dtype]
    out, expected = out.float(), expected.float()
    scale = 1 + float(expected.abs().max()) if expected.numel() else 1.0
    err = float((out - expected).abs().nan_to_num(float("inf")).max()) if out.numel() else 0.0
    good = bool(torch.isfinite(out).all()) and torch.allclose(out, expected, rtol=rtol, atol=atol * scale)
    return good, err
