"""Command line: ``python -m eie_model simulate ...`` and ``python -m eie_model sweep ...``.

Examples::

    python -m eie_model simulate --benchmark alex6 --json
    python -m eie_model simulate --benchmark all --pes 64 --fifo 8 --sram-width 64 --json
    python -m eie_model simulate --benchmark all --workload fc8-stats --semantics paper-simulator
    python -m eie_model simulate --eie-dump path/to/eie_alexnet_fc8 --json
    python -m eie_model simulate --digits --json
    python -m eie_model sweep fifo --benchmark alex7 vgg7 --out out/eie_sweeps
    python -m eie_model sweep fifo --benchmark alex8 --eie-dump path/to/eie_alexnet_fc8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from eie_model.config import SEMANTICS, EIEConfig
from eie_model.dump_simulation import dump_label, simulate_dump
from eie_model.energy import ENERGY_TABLES, energy_table
from eie_model.sweep import SWEEPS, plot_sweep, run_sweep
from workloads.eie import simulate_benchmark, simulate_digits, sweep_inputs
from workloads.eie_workloads import WORKLOADS
from workloads.paper_layers import BENCHMARKS

#: (JSON key, header, width, format) of the human-readable table.
_TABLE_COLUMNS = (
    ("layer", "layer", 24, "{:<24}"),
    ("cycles", "cycles", 9, "{:>9}"),
    ("time_us", "time us", 9, "{:>9.2f}"),
    ("theoretical_us", "ideal us", 9, "{:>9.2f}"),
    ("load_efficiency", "load eff", 9, "{:>9.3f}"),
    ("useful_efficiency", "useful eff", 10, "{:>10.3f}"),
    ("entries", "entries", 10, "{:>10}"),
    ("padding_entries", "padding", 9, "{:>9}"),
    ("energy_uj", "energy uJ", 10, "{:>10.3f}"),
    ("power_mw", "power mW", 9, "{:>9.1f}"),
    ("energy_at_chip_power_uj", "uJ at chip W", 12, "{:>12.3f}"),
)


def _positive_number(text: str) -> float:
    """An argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def _print_json(value) -> None:
    """Print strict JSON; results that are not finite (an extreme design point) are an error."""
    try:
        print(json.dumps(value, indent=2, allow_nan=False))
    except ValueError as exc:
        raise ValueError(f"the results hold NaN or infinity (an extreme design point?): {exc}") from exc


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    default = EIEConfig()
    group = parser.add_argument_group("design point (defaults: the paper's 64-PE EIE)")
    group.add_argument("--pes", type=int, default=default.pes)
    group.add_argument("--fifo", type=int, default=default.fifo_depth, help="activation queue depth")
    group.add_argument("--sram-width", type=int, default=default.sram_width, help="bits per spmat line")
    group.add_argument("--clock-mhz", type=_positive_number, default=default.clock_mhz)
    group.add_argument("--weight-bits", type=int, default=default.weight_bits)
    group.add_argument("--index-bits", type=int, default=default.index_bits)
    group.add_argument("--act-bits", type=int, default=default.act_bits)
    group.add_argument("--rf-size", type=int, default=default.rf_size, help="register file entries per PE")
    group.add_argument(
        "--semantics",
        choices=SEMANTICS,
        default=default.semantics,
        help="hardware (default) or the EIE authors' simulator: a queue of size B holds B-1, one pass",
    )
    group.add_argument("--energy-table", choices=sorted(ENERGY_TABLES), default="module")


def _add_workload_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workload",
        choices=list(WORKLOADS),
        default=None,
        help="how the benchmark layers are generated: uniform (default), or the statistics of the "
        "authors' fc8 dump",
    )


def _config(args: argparse.Namespace) -> EIEConfig:
    return EIEConfig(
        pes=args.pes,
        fifo_depth=args.fifo,
        sram_width=args.sram_width,
        clock_mhz=args.clock_mhz,
        weight_bits=args.weight_bits,
        index_bits=args.index_bits,
        act_bits=args.act_bits,
        rf_size=args.rf_size,
        semantics=args.semantics,
    )


def _benchmarks(names: list[str]) -> list[str]:
    if "all" in names:
        return list(BENCHMARKS)
    return list(names)


def _simulate(args: argparse.Namespace) -> int:
    if args.workload is not None and args.benchmark is None:
        raise ValueError(
            "--workload applies to --benchmark layers; a dump or the digits network is real data"
        )
    config = _config(args)
    table = energy_table(args.energy_table, config.pes)
    results = []
    if args.eie_dump is not None:
        results.append(simulate_dump(args.eie_dump, config, energy_table=table))
    elif args.digits:
        results.extend(simulate_digits(config, seed=args.seed, image=args.image, energy_table=table))
    else:
        names = _benchmarks(args.benchmark)
        for k, name in enumerate(names, 1):
            started = time.perf_counter()
            result = simulate_benchmark(
                name,
                config,
                seed=args.seed,
                scale=args.scale,
                energy_table=table,
                workload=args.workload or "uniform",
            )
            elapsed = time.perf_counter() - started
            print(f"[{k}/{len(names)}] {name}: {result.cycles} cycles ({elapsed:.2f} s)", file=sys.stderr)
            results.append(result)
    dicts = [r.to_dict(per_pe=args.per_pe) for r in results]
    if args.json:
        single = args.eie_dump is not None or (
            args.benchmark is not None and len(dicts) == 1 and "all" not in args.benchmark
        )
        _print_json(dicts[0] if single else dicts)
    else:
        print(
            " ".join(
                f"{header:<{w}}" if key == "layer" else f"{header:>{w}}"
                for key, header, w, _ in _TABLE_COLUMNS
            )
        )
        for d in dicts:
            print(" ".join(fmt.format(d[key]) for key, _, _, fmt in _TABLE_COLUMNS))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    base = _config(args)
    values = None if args.values is None else [int(v) for v in args.values.split(",") if v.strip()]
    names = _benchmarks(args.benchmark)
    if args.eie_dump is not None:
        names.append(dump_label(args.eie_dump))
    table = run_sweep(
        args.sweep,
        names,
        sweep_inputs(args.workload or "uniform", seed=args.seed, scale=args.scale, dump=args.eie_dump),
        values,
        base,
        energy_table=energy_table(args.energy_table, base.pes),
        progress=lambda line: print(line, file=sys.stderr),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"eie_sweep_{args.sweep}.csv"
    table.to_csv(csv_path, index=False)
    png_path = plot_sweep(table, out / f"eie_sweep_{args.sweep}.png")
    print(json.dumps({"csv": str(csv_path), "png": str(png_path), "rows": len(table)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eie_model", description="Cycle-level model of EIE.")
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="simulate benchmark layers or an authors' dump")
    source = sim.add_mutually_exclusive_group(required=True)
    source.add_argument("--benchmark", nargs="+", choices=[*BENCHMARKS, "all"], metavar="NAME")
    source.add_argument("--eie-dump", metavar="DIR", help="folder in the EIE authors' dump format")
    source.add_argument(
        "--digits", action="store_true", help="the digits LeNet-300-100 on real activations (a list)"
    )
    sim.add_argument("--json", action="store_true", help="print JSON (a list for several layers)")
    sim.add_argument("--per-pe", action="store_true", help="include per-PE cycle lists in the JSON")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--scale", type=_positive_number, default=1.0, help="shrink benchmark layers (0 < scale <= 1)"
    )
    sim.add_argument("--image", type=int, default=0, help="test image for --digits")
    _add_workload_argument(sim)
    _add_config_arguments(sim)
    sim.set_defaults(run=_simulate)

    sweep = sub.add_parser("sweep", help="vary one parameter; writes CSV and PNG")
    sweep.add_argument("sweep", choices=sorted(SWEEPS))
    sweep.add_argument("--values", help="comma-separated values (default: the sweep's full range)")
    sweep.add_argument(
        "--benchmark", nargs="+", choices=[*BENCHMARKS, "all"], default=["all"], metavar="NAME"
    )
    sweep.add_argument("--eie-dump", metavar="DIR", help="also sweep the layer of an authors' dump folder")
    sweep.add_argument("--out", default="out/eie_sweeps")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--scale", type=_positive_number, default=1.0)
    _add_workload_argument(sweep)
    _add_config_arguments(sweep)
    sweep.set_defaults(run=_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, ImportError, ArithmeticError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
