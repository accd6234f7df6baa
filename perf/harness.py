"""The shared benchmark harness: machine facts, side-by-side timing, progress, CSV with provenance.

Every benchmark script in perf/ records the same provenance columns (machine or GPU name,
library versions, git commit, date) so that results committed under perf/results/ can be traced.
GPU timing (cold and warm, CUDA events) is in `perf.gpu_timing`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# The `gpu` provenance value of a GPU benchmark's dry run on the CPU (Triton's interpreter): readers
# of GPU results skip such rows.
DRY_RUN_GPU_PREFIX = "cpu-interpreter"
# Where the tree is a copy without its git history (a device machine gets the working tree only),
# the commit can be passed in this environment variable.
COMMIT_ENV = "DCOMP_COMMIT"
# What `nvidia-smi --query-gpu` reports beside torch's device properties, and the column names.
NVIDIA_SMI_FIELDS = {
    "driver_version": "gpu_driver",
    "clocks.sm": "gpu_sm_clock_mhz",
    "clocks.max.sm": "gpu_sm_clock_max_mhz",
    "clocks.mem": "gpu_mem_clock_mhz",
    "power.limit": "gpu_power_limit_w",
}


def git_commit() -> str:
    """The checked-out commit (with '+dirty' when the tree has changes), else the value of
    ``$DCOMP_COMMIT``, else 'unknown'."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get(COMMIT_ENV, "unknown")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float:
    """The 1-minute load average (runnable processes), or NaN where the OS does not report it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def machine_info(device: str = "cpu") -> dict[str, str]:
    """Provenance of a measurement: where, with what, when."""
    import numpy
    import torch

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cpu": cpu_name(),
        "cpu_cores": str(os.cpu_count() or 0),
        "cpu_threads": str(torch.get_num_threads()),
        # Other processes compete for the cores: a 1-minute load above the core count means
        # CPU timings are noisy (the report says so).
        "load_avg_1min": f"{load_average():.2f}",
        "device": device,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = "none"
    if device.startswith("cuda"):
        info.update(gpu_info(torch.device(device)))
    return info


def gpu_info(device) -> dict[str, str]:
    """Facts of a CUDA device: name, compute capability, memory, L2, CUDA runtime, and from
    ``nvidia-smi`` (where present) driver, clocks at the time of the call and power limit."""
    import torch

    props = torch.cuda.get_device_properties(device)
    info = {
        "gpu": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_sms": str(props.multi_processor_count),
        "gpu_memory_bytes": str(props.total_memory),
        # Absent from older torch releases' device properties.
        "gpu_l2_bytes": str(getattr(props, "L2_cache_size", "unknown")),
        "cuda": str(torch.version.cuda),
    }
    uuid = str(getattr(props, "uuid", ""))
    # nvidia-smi numbers devices in PCI order, CUDA (and CUDA_VISIBLE_DEVICES) may not: select by
    # UUID (torch gives it without nvidia-smi's "GPU-" prefix).
    if uuid:
        selector = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    else:
        selector = str(torch.device(device).index or 0)
    try:
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits",
             "-i", selector],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        smi = proc.stdout
    except (OSError, subprocess.SubprocessError):
        smi = ""
    info.update(parse_nvidia_smi(smi))
    return info


def parse_nvidia_smi(text: str) -> dict[str, str]:
    """The `NVIDIA_SMI_FIELDS` columns from the first line of ``nvidia-smi --query-gpu=...
    --format=csv,noheader,nounits`` output; 'unknown' for each when the output does not hold them."""
    values = [v.strip() for v in text.strip().splitlines()[0].split(",")] if text.strip() else []
    if len(values) != len(NVIDIA_SMI_FIELDS):
        values = ["unknown"] * len(NVIDIA_SMI_FIELDS)
    return dict(zip(NVIDIA_SMI_FIELDS.values(), values))


def gpu_run_info(device) -> dict[str, str]:
    """Provenance of a GPU benchmark run: `machine_info` with the GPU's facts; off CUDA (a dry run
    under Triton's interpreter) the ``gpu`` column names the interpreter and the CPU's architecture."""
    info = machine_info(str(device))
    if not info["device"].startswith("cuda"):
        info["gpu"] = f"{DRY_RUN_GPU_PREFIX}-{platform.machine()}"
    return info


#: Anything that takes a progress line (a `Progress`, ``print``, a list's ``append``).
ProgressFn = Callable[[str], None]


class Progress:
    """Progress lines on stderr with the seconds elapsed since the start (stdout stays clean for
    tables and JSON); each line is also appended to ``log_path`` when given (as it is printed, so
    that a run killed by a timeout keeps its log). ``budget_s`` is the run's time budget, counted
    from the same start: `left` says how much of it remains."""

    def __init__(
        self, enabled: bool = True, log_path: str | os.PathLike | None = None, budget_s: float = math.inf
    ) -> None:
        if math.isnan(budget_s) or budget_s < 0:
            raise ValueError(f"budget_s must be >= 0 seconds, got {budget_s}")
        self.start = time.perf_counter()
        self.enabled = enabled
        self.budget_s = budget_s
        self.log_path = None if log_path is None else Path(log_path)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds of the budget left (negative once it is spent; infinite without a budget)."""
        return self.budget_s - self.elapsed()

    def __call__(self, message: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {message}"
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
        if self.log_path is not None:
            with self.log_path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")


@dataclass(frozen=True)
class Timing:
    """Median and spread of repeated wall-clock timings, in seconds."""

    median: float
    low: float
    high: float
    repeats: int

    @property
    def median_us(self) -> float:
        return self.median * 1e6

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Timing:
        """The median of ``samples`` (seconds), with the fastest and slowest tenth cut off for
        low/high."""
        if not samples:
            raise ValueError("no timing samples")
        ordered = sorted(samples)
        n = len(ordered)
        return cls(statistics.median(ordered), ordered[n // 10], ordered[-1 - n // 10], n)


def time_cpu(fn: Callable[[], object], *, warmup: int = 3, repeat: int = 20, min_time: float = 0.2) -> Timing:
    """Median wall time of ``fn()`` on the CPU: warm-up calls, then at least ``repeat`` calls and
    at least ``min_time`` seconds in total."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if len(samples) >= 10 * repeat:
            break
    return Timing.from_samples(samples)


def time_interleaved(
    fns: dict[str, Callable[[], object]], *, rounds: int = 5, repeat: int = 5, warmup: int = 1
) -> dict[str, Timing]:
    """Side-by-side medians: after ``warmup`` calls each, the functions take turns, ``rounds``
    times ``repeat`` calls each, so that a change in machine load hits all of them alike. The
    median is over all calls; low/high are the extreme medians of the rounds."""
    if rounds < 1 or repeat < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, repeat >= 1, warmup >= 0; got {rounds}, {repeat}, {warmup}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    round_medians: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            samples[name] += times
            round_medians[name].append(statistics.median(times))
    return {
        name: Timing(
            statistics.median(samples[name]),
            min(round_medians[name]),
            max(round_medians[name]),
            len(samples[name]),
        )
        for name in fns
    }


def write_csv(path: str | os.PathLike, rows: Sequence[dict], info: dict[str, str] | None = None) -> Path:
    """Write rows (dicts) as CSV, each row carrying the provenance columns of ``info``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = info or {}
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    fields.extend(k for k in info if k not in fields)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**info, **row})
    return path


def format_table(rows: Iterable[dict], columns: Sequence[str]) -> list[str]:
    """The lines of a plain aligned text table, header first (numbers to 3 significant digits,
    large ones as integers)."""
    rows = list(rows)

    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if 1e3 <= abs(value) < 1e15 else f"{value:.3g}"
        return "" if value is None else str(value)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    return ["  ".join(v.rjust(w) for v, w in zip(line, widths)) for line in [list(columns), *cells]]


def print_table(rows: Iterable[dict], columns: Sequence[str], file=sys.stdout) -> None:
    """`format_table` printed to ``file``."""
    for line in format_table(rows, columns):
        print(line, file=file)
    file.flush()


def doc_summary(doc: str | None) -> str:
    """The first paragraph of a module docstring on one line: a command's ``--help`` description
    (its first line alone would stop mid-sentence where the sentence wraps)."""
    paragraph = (doc or "").strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())
