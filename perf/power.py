"""Power figures for energy = time x power, each with where it comes from.

A figure is ``measured`` (this run read an energy counter), ``given`` (the user passed it) or an
``estimate`` (a published TDP, named with its source). TDP is what the part may dissipate under
sustained load: a batch-1 layer that leaves most of the chip idle draws less, so TDP-based
energies are upper bounds. EIE's energy does not use this module: it comes from the model
(`eie_model.energy`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KINDS = ("measured", "given", "estimate")

#: (substring of the CPU model name, package TDP in W, cores, source). A share of the package
#: (TDP / cores x threads used) is charged: the benchmark runs on that many cores.
CPU_TDP: tuple[tuple[str, float, int, str], ...] = (
    ("i7-5930K", 140.0, 6, "Intel ARK, Core i7-5930K: TDP 140 W, 6 cores (the EIE paper's CPU)"),
    (
        "EPYC",
        280.0,
        64,
        "AMD EPYC 7763 product page: TDP 280 W, 64 cores (a representative AMD EPYC server part; "
        "this machine reports no exact model)",
    ),
    (
        "Xeon",
        270.0,
        40,
        "Intel ARK, Xeon Platinum 8380: TDP 270 W, 40 cores (a representative Xeon server part)",
    ),
)
#: Used when the CPU matches nothing above.
GENERIC_CPU_WATTS_PER_CORE = 10.0
GENERIC_CPU_SOURCE = "generic figure of 10 W per core (the CPU model is not in perf/power.py's table)"

#: (substring of the GPU name, board power in W, source); more specific names first.
GPU_TDP: tuple[tuple[str, float, str], ...] = (
    ("H200 NVL", 600.0, "NVIDIA H200 datasheet: H200 NVL max TDP 600 W"),
    ("H200", 700.0, "NVIDIA H200 datasheet: H200 SXM max TDP 700 W"),
    ("H100 PCIe", 350.0, "NVIDIA H100 datasheet: H100 PCIe max TDP 350 W"),
    ("H100 NVL", 400.0, "NVIDIA H100 datasheet: H100 NVL max TDP 400 W"),
    ("H100", 700.0, "NVIDIA H100 datasheet: H100 SXM max TDP 700 W"),
    ("A100-PCIE", 300.0, "NVIDIA A100 datasheet: A100 80GB PCIe max TDP 300 W"),
    ("A100", 400.0, "NVIDIA A100 datasheet: A100 SXM max TDP 400 W"),
    ("L40S", 350.0, "NVIDIA L40S datasheet: max power 350 W"),
    ("L4", 72.0, "NVIDIA L4 datasheet: max power 72 W"),
    ("A10", 150.0, "NVIDIA A10 datasheet: max TDP 150 W"),
    ("T4", 70.0, "NVIDIA T4 datasheet: 70 W"),
    ("RTX 4090", 450.0, "NVIDIA GeForce RTX 4090 specifications: total graphics power 450 W"),
)

RAPL_PACKAGE = Path("/sys/class/powercap/intel-rapl:0")


@dataclass(frozen=True)
class PowerFigure:
    """A power in watts, how it was obtained (`KINDS`) and its source in words."""

    watts: float
    kind: str
    source: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.watts > 0:
            raise ValueError(f"watts must be positive, got {self.watts!r}")

    def label(self) -> str:
        return f"{self.watts:.3g} W ({self.kind}: {self.source})"


def cpu_power(
    cpu: str, threads: int, *, measured: float | None = None, given: float | None = None
) -> PowerFigure:
    """The CPU power charged for ``threads`` busy threads: ``given`` if set, else ``measured``
    (package power read during the run), else a TDP share (`CPU_TDP`)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if given is not None:
        return PowerFigure(given, "given", "--cpu-watts")
    if measured is not None:
        return PowerFigure(
            measured, "measured", "RAPL package energy counter over the CPU benchmark (includes other load)"
        )
    for needle, tdp, cores, source in CPU_TDP:
        if needle.lower() in cpu.lower():
            used = min(threads, cores)
            return PowerFigure(tdp / cores * used, "estimate", f"{used} of {cores} cores x TDP; {source}")
    return PowerFigure(
        GENERIC_CPU_WATTS_PER_CORE * threads, "estimate", f"{threads} cores; {GENERIC_CPU_SOURCE}"
    )


def gpu_power(gpu: str, *, given: float | None = None) -> PowerFigure | None:
    """The GPU's board power: ``given`` if set, else its TDP (`GPU_TDP`); None when unknown."""
    if given is not None:
        return PowerFigure(given, "given", "--gpu-watts")
    for needle, tdp, source in GPU_TDP:
        if needle.lower() in gpu.lower():
            return PowerFigure(tdp, "estimate", f"board TDP (upper bound at batch 1); {source}")
    return None


def read_rapl_joules(package: Path = RAPL_PACKAGE) -> tuple[float, float] | None:
    """(energy in J, counter range in J) of the package counter, or None where it cannot be read
    (no RAPL, a virtual machine, or no permission)."""
    try:
        energy = int((package / "energy_uj").read_text())
        wrap = int((package / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return None
    return energy * 1e-6, wrap * 1e-6


def measure_package_power(
    fn: Callable[[], object], package: Path = RAPL_PACKAGE
) -> tuple[object, float | None]:
    """Run ``fn()``; return its result and the mean package power over the call in W (None when
    the counter cannot be read)."""
    before = read_rapl_joules(package)
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    after = read_rapl_joules(package)
    if before is None or after is None or seconds <= 0:
        return result, None
    joules = after[0] - before[0]
    if joules < 0:  # the counter wrapped once
        joules += before[1]
    return result, joules / seconds if joules > 0 else None
