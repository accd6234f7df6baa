"""The EIE simulator: its results on the paper's nine benchmark layers and its own speed.

Per layer (`workloads.simulate_benchmark`: a random layer of the paper's shape and weight density
and a seeded input of the paper's activation density, generated as the chosen workload of
`workloads.eie_workloads` says, on the paper's 64-PE design by default): cycles, time, load and
useful efficiency, padding, energy (activity-based, and time x the paper's chip power) and power
from the model, plus the wall seconds the simulation took (the simulator's speed); the EIE
authors' dump as one more row when its folder is given. `compare_workloads` runs every layer
under every workload preset. Then the design-space sweeps the report plots (`eie_model.run_sweep`):
FIFO depth, number of PEs, SRAM width and z width.

    python -m perf.bench_eie [--layers alex7 vgg6] [--sweeps fifo pes] [--workload fc8-stats]
                             [--eie-dump DIR] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from eie_model import SWEEPS, EIEConfig, SimResult, run_sweep, simulate_dump
from eie_model.dump_simulation import dump_label
from perf.harness import Progress, doc_summary, machine_info, print_table, write_csv
from workloads.eie import simulate_benchmark, sweep_inputs
from workloads.eie_workloads import WORKLOADS
from workloads.paper_layers import BENCHMARKS, PAPER_LAYERS

COLUMNS = (
    "layer",
    "workload",
    "cycles",
    "time_us",
    "load_efficiency",
    "useful_efficiency",
    "padding_entries",
    "energy_uj",
    "energy_at_chip_power_uj",
    "power_mw",
    "sim_seconds",
)
QUICK_SWEEP_VALUES = {
    "fifo": (1, 2, 4, 8, 32),
    "pes": (1, 4, 16, 64, 256),
    "sram-width": (32, 64, 128, 512),
    "index-bits": (3, 4, 6),
}
#: The ``workload`` of the dump's row: real weights and a real input, not generated.
DUMP_WORKLOAD = "authors' dump"


def _check_layers(names: tuple[str, ...], what: str) -> None:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"{what}: unknown layers {unknown}; choose from {', '.join(BENCHMARKS)}")


@dataclass(frozen=True)
class EieBenchConfig:
    """What `simulate_layers`, `compare_workloads` and `run_sweeps` run: benchmark layers, the
    design point, the seed, the workload the layers are generated as (a preset of
    `workloads.eie_workloads.WORKLOADS`), the EIE authors' dump folder (None: no dump row or
    sweep line), the sweeps (names of `eie_model.SWEEPS`) with their layers and values (None:
    the sweep's full range)."""

    layers: tuple[str, ...] = BENCHMARKS
    eie: EIEConfig = field(default_factory=EIEConfig)
    seed: int = 0
    workload: str = "uniform"
    dump: Path | None = None
    sweeps: tuple[str, ...] = tuple(SWEEPS)
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
        if self.workload not in WORKLOADS:
            raise ValueError(f"unknown workload {self.workload!r}; choose from {', '.join(WORKLOADS)}")
        if self.dump is not None and not Path(self.dump).is_dir():
            raise ValueError(f"the EIE dump folder {self.dump} does not exist")

    def values(self, sweep: str) -> tuple[int, ...] | None:
        return dict(self.sweep_values).get(sweep)

    @classmethod
    def quick(cls, **overrides) -> EieBenchConfig:
        """Shorter sweeps (fewer values; one small layer unless ``sweep_layers`` is given)."""
        defaults = {"sweep_layers": ("nt-lstm",), "sweep_values": tuple(QUICK_SWEEP_VALUES.items())}
        return cls(**{**defaults, **overrides})


# The figures of a simulated layer that every row holds (attributes of `eie_model.SimResult`).
RESULT_FIGURES = (
    "cycles", "time_us", "theoretical_us", "load_efficiency", "useful_efficiency", "entries",
    "padding_entries", "useful_multiplies", "energy_uj", "energy_at_chip_power_uj", "power_mw", "gops",
    "output_checksum",
)  # fmt: skip


def _result_row(result: SimResult, workload: str) -> dict:
    return {"layer": result.name, "workload": workload, **{k: getattr(result, k) for k in RESULT_FIGURES}}


def simulate_layers(config: EieBenchConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per benchmark layer (and the dump's, when ``config.dump`` is set): the simulated
    figures and the simulator's wall time."""
    rows = []
    names = [*config.layers, *([dump_label(config.dump)] if config.dump is not None else [])]
    for k, name in enumerate(names, 1):
        started = time.perf_counter()
        if name in PAPER_LAYERS:
            result = simulate_benchmark(name, config.eie, seed=config.seed, workload=config.workload)
            workload = config.workload
        else:
            result = simulate_dump(config.dump, config.eie)
            workload = DUMP_WORKLOAD
        wall = time.perf_counter() - started
        outputs, inputs = result.shape
        rows.append(
            {
                **_result_row(result, workload),
                "inputs": inputs,
                "outputs": outputs,
                "weight_density": (result.entries - result.padding_entries) / (outputs * inputs),
                "activation_density": result.broadcasts / inputs,
                "pes": config.eie.pes,
                "fifo_depth": config.eie.fifo_depth,
                "weight_bits": config.eie.weight_bits,
                "index_bits": config.eie.index_bits,
                "semantics": config.eie.semantics,
                "sim_seconds": wall,
                "sim_entries_per_s": result.entries / wall,
            }
        )
        if progress is not None:
            progress(
                f"EIE [{k}/{len(names)}] {name}: {result.cycles} cycles = {result.time_us:.1f} us, "
                f"load efficiency {result.load_efficiency:.3f}, useful {result.useful_efficiency:.3f} "
                f"(simulated in {wall:.1f} s)"
            )
    return rows


def compare_workloads(
    config: EieBenchConfig,
    progress: Callable[[str], None] | None = None,
    simulated: list[dict] | None = None,
) -> list[dict]:
    """Every benchmark layer of ``config`` under every workload preset: one row per (layer,
    workload). ``simulated``: rows of `simulate_layers` for the same ``config``, whose layers and
    workload are taken from them instead of simulated again (the simulator is deterministic)."""
    done = {(r["layer"], r["workload"]): r for r in simulated or ()}
    rows = []
    started = time.perf_counter()
    for workload in WORKLOADS:
        for name in config.layers:
            row = done.get((name, workload))
            if row is None:
                result = simulate_benchmark(name, config.eie, seed=config.seed, workload=workload)
                row = _result_row(result, workload)
            rows.append({key: row[key] for key in ("layer", "workload", *RESULT_FIGURES)})
    if progress is not None:
        progress(
            f"EIE workloads: {len(config.layers)} layers x {len(WORKLOADS)} workloads "
            f"({time.perf_counter() - started:.1f} s)"
        )
    return rows


def run_sweeps(
    config: EieBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, pd.DataFrame]:
    """Each sweep of ``config`` as the table of `eie_model.run_sweep`, plus ``speedup`` (time at
    the sweep's first value over time at each value, per layer) and ``padding_share`` (padding
    entries over entries)."""
    tables = {}
    inputs = sweep_inputs(config.workload, seed=config.seed, dump=config.dump)
    layers = [*config.sweep_layers, *([dump_label(config.dump)] if config.dump is not None else [])]
    for sweep in config.sweeps:
        started = time.perf_counter()
        table = run_sweep(sweep, layers, inputs, config.values(sweep), config.eie)
        first = table.groupby("benchmark", sort=False)["time_us"].transform("first")
        table["speedup"] = first / table["time_us"]
        table["padding_share"] = table["padding_entries"] / table["entries"]
        tables[sweep] = table
        if progress is not None:
            progress(
                f"EIE sweep {sweep}: {len(table)} design points on {len(layers)} layers "
                f"({time.perf_counter() - started:.1f} s)"
            )
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_eie", description=doc_summary(__doc__))
    parser.add_argument("--layers", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--sweeps", nargs="*", default=list(SWEEPS), choices=sorted(SWEEPS))
    parser.add_argument(
        "--workload", choices=list(WORKLOADS), default="uniform", help="how layers are generated"
    )
    parser.add_argument(
        "--eie-dump", type=Path, default=None, help="the EIE authors' dump folder (one more layer)"
    )
    parser.add_argument("--quick", action="store_true", help="short sweeps on one small layer")
    parser.add_argument("--out", type=Path, default=Path("out/bench_eie"), help="output folder")
    args = parser.parse_args(argv)
    fields = {
        "layers": tuple(args.layers),
        "sweeps": tuple(args.sweeps),
        "workload": args.workload,
        "dump": args.eie_dump,
    }
    try:
        config = EieBenchConfig.quick(**fields) if args.quick else EieBenchConfig(**fields)
    except ValueError as exc:
        parser.error(str(exc))
    progress = Progress()
    info = machine_info()
    rows = simulate_layers(config, progress)
    print_table(rows, COLUMNS)
    total = sum(r["sim_seconds"] for r in rows)
    print(f"simulator: {len(rows)} layers in {total:.1f} s (load average {info['load_avg_1min']})")
    write_csv(args.out / "eie_layers.csv", rows, info)
    write_csv(args.out / "eie_workloads.csv", compare_workloads(config, progress, rows), info)
    for sweep, table in run_sweeps(config, progress).items():
        write_csv(args.out / f"eie_sweep_{sweep}.csv", table.to_dict("records"), info)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
