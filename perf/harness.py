"""The shared benchmark harness: machine facts, side-by-side timing, CSV with provenance.

Every benchmark script in perf/ records the same provenance columns (machine or GPU name,
library versions, git commit, date) so that results committed under perf/results/ can be traced.
"""

from __future__ import annotations

import csv
import datetime as _dt
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


def git_commit() -> str:
    """The checked-out commit (with '+dirty' when the tree has changes), or 'unknown'."""
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
        return "unknown"


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
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


class Progress:
    """Progress lines on stderr with the seconds elapsed since the start (stdout stays clean for
    tables and JSON)."""

    def __init__(self, enabled: bool = True) -> None:
        self.start = time.perf_counter()
        self.enabled = enabled

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{self.elapsed():6.1f}s] {message}", file=sys.stderr, flush=True)


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
    samples.sort()
    return Timing(
        statistics.median(samples),
        samples[len(samples) // 10],
        samples[-1 - len(samples) // 10],
        len(samples),
    )


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


def print_table(rows: Iterable[dict], columns: Sequence[str], file=sys.stdout) -> None:
    """A plain aligned text table (numbers to 3 significant digits, large ones as integers)."""
    rows = list(rows)

    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.0f}" if 1e3 <= abs(value) < 1e15 else f"{value:.3g}"
        return "" if value is None else str(value)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)), file=file)
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)), file=file)
    file.flush()
