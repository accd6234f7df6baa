"""The EIE simulator: its results on the paper's nine benchmark layers and its own speed.

Per layer (`workloads.simulate_benchmark`: a random layer of the paper's shape and weight density
and a seeded input of the paper's activation density, on the paper's 64-PE design by default):
cycles, time, load efficiency, padding, energy and power from the model, plus the wall seconds
the simulation took (the simulator's speed). Then the design-space sweeps the report plots
(`eie_model.run_sweep`): load efficiency against FIFO depth and time against the number of PEs.

    python -m perf.bench_eie [--layers alex7 vgg6] [--sweeps fifo pes] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd

from eie_model import SWEEPS, EIEConfig, run_sweep
from perf.harness import Progress, doc_summary, machine_info, print_table, write_csv
from workloads.eie import simulate_benchmark
from workloads.paper_layers import BENCHMARKS, PAPER_LAYERS, benchmark_inputs

COLUMNS = (
    "layer",
    "cycles",
    "time_us",
    "load_efficiency",
    "padding_entries",
    "energy_uj",
    "power_mw",
    "sim_seconds",
)
QUICK_SWEEP_VALUES = {"fifo": (1, 2, 4, 8, 32), "pes": (1, 4, 16, 64, 256)}


def _check_layers(names: tuple[str, ...], what: str) -> None:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"{what}: unknown layers {unknown}; choose from {', '.join(BENCHMARKS)}")


@dataclass(frozen=True)
class EieBenchConfig:
    """What `simulate_layers` and `run_sweeps` run: benchmark layers, the design point, the seed,
    the sweeps (names of `eie_model.SWEEPS`) with their layers and values (None: the sweep's
    full range)."""

    layers: tuple[str, ...] = BENCHMARKS
    eie: EIEConfig = field(default_factory=EIEConfig)
    seed: int = 0
    sweeps: tuple[str, ...] = ("fifo", "pes")
    sweep_layers: tuple[str, ...] = BENCHMARKS
    sweep_values: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __post_init__(self) -> None:
        _check_layers(self.layers, "layers")
        _check_layers(self.sweep_layers, "sweep_layers")
        unknown = [s for s in self.sweeps if s not in SWEEPS]
        if unknown:
            raise ValueError(f"unknown sweeps {unknown}; choose from {sorted(SWEEPS)}")
        if not isinstance(self.eie, EIEConfig):
            raise TypeError(f"eie must be an eie_model.EIEConfig, got {type(self.eie).__name__}")

    def values(self, sweep: str) -> tuple[int, ...] | None:
        return dict(self.sweep_values).get(sweep)

    @classmethod
    def quick(cls, **overrides) -> EieBenchConfig:
        """Shorter sweeps (fewer values; one small layer unless ``sweep_layers`` is given)."""
        defaults = {"sweep_layers": ("nt-lstm",), "sweep_values": tuple(QUICK_SWEEP_VALUES.items())}
        return cls(**{**defaults, **overrides})


def simulate_layers(config: EieBenchConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per benchmark layer: the simulated figures and the simulator's wall time."""
    rows = []
    for k, name in enumerate(config.layers, 1):
        started = time.perf_counter()
        result = simulate_benchmark(name, config.eie, seed=config.seed)
        wall = time.perf_counter() - started
        spec = PAPER_LAYERS[name]
        rows.append(
            {
                "layer": name,
                "inputs": spec.inputs,
                "outputs": spec.outputs,
                "weight_density": spec.weight_density,
                "activation_density": spec.activation_density,
                "pes": config.eie.pes,
                "fifo_depth": config.eie.fifo_depth,
                "weight_bits": config.eie.weight_bits,
                "index_bits": config.eie.index_bits,
                "cycles": result.cycles,
                "time_us": result.time_us,
                "theoretical_us": result.theoretical_us,
                "load_efficiency": result.load_efficiency,
                "entries": result.entries,
                "padding_entries": result.padding_entries,
                "energy_uj": result.energy_uj,
                "power_mw": result.power_mw,
                "gops": result.gops,
                "output_checksum": result.output_checksum,
                "sim_seconds": wall,
                "sim_entries_per_s": result.entries / wall,
            }
        )
        if progress is not None:
            progress(
                f"EIE [{k}/{len(config.layers)}] {name}: {result.cycles} cycles = {result.time_us:.1f} us, "
                f"load efficiency {result.load_efficiency:.3f} (simulated in {wall:.1f} s)"
            )
    return rows


def run_sweeps(
    config: EieBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, pd.DataFrame]:
    """Each sweep of ``config`` as the table of `eie_model.run_sweep`, plus ``speedup``: time at
    the sweep's first value over time at each value, per layer."""
    tables = {}
    for sweep in config.sweeps:
        started = time.perf_counter()
        inputs = partial(benchmark_inputs, seed=config.seed)
        table = run_sweep(sweep, config.sweep_layers, inputs, config.values(sweep), config.eie)
        first = table.groupby("benchmark", sort=False)["time_us"].transform("first")
        table["speedup"] = first / table["time_us"]
        tables[sweep] = table
        if progress is not None:
            progress(
                f"EIE sweep {sweep}: {len(table)} design points on {len(config.sweep_layers)} layers "
                f"({time.perf_counter() - started:.1f} s)"
            )
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_eie", description=doc_summary(__doc__))
    parser.add_argument("--layers", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--sweeps", nargs="*", default=["fifo", "pes"], choices=sorted(SWEEPS))
    parser.add_argument("--quick", action="store_true", help="short sweeps on one small layer")
    parser.add_argument("--out", type=Path, default=Path("out/bench_eie"), help="output folder")
    args = parser.parse_args(argv)
    fields = {"layers": tuple(args.layers), "sweeps": tuple(args.sweeps)}
    config = EieBenchConfig.quick(**fields) if args.quick else EieBenchConfig(**fields)
    progress = Progress()
    info = machine_info()
    rows = simulate_layers(config, progress)
    print_table(rows, COLUMNS)
    total = sum(r["sim_seconds"] for r in rows)
    print(f"simulator: {len(rows)} layers in {total:.1f} s (load average {info['load_avg_1min']})")
    write_csv(args.out / "eie_layers.csv", rows, info)
    for sweep, table in run_sweeps(config, progress).items():
        write_csv(args.out / f"eie_sweep_{sweep}.csv", table.to_dict("records"), info)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
