"""The CI guard: warp-instructions per kept weight of the hot configurations may not exceed the
ceilings checked in beside the results (``perf/results/cost/ceilings.json``).

The guarded configurations are the fixed-width kernel at batch 1 and 16 (5-bit codes, 6-bit
indices, float16, 32 rows x 8 chunks: the layout of the 4096 x 4096 reference layer) and the
Huffman kernel at batch 1 (float16, 4 rows x 32 column blocks, the paper layers' shape), compiled
for sm_90 as the dispatcher launches them. A kernel change that
makes them issue more instructions per kept weight fails CI; raising a ceiling is a deliberate,
reviewed edit of the JSON file. A figure well below its ceiling is reported so that the ceiling
can be lowered to lock the gain in. Where a guard sets ``max_warp_cycles_per_iteration``, the
cycles of one loop iteration of a warp issuing alone (its compiled body replayed with the stall
counts and scoreboard waits ptxas encoded: `perf.cost.warp_issue`, with the H100's planning
latencies) may not exceed it either: a longer chain of dependent instructions, or a load waited
on sooner, slows a small layer's decode without adding an instruction.

    python -m perf.cost.ceilings [--ceilings perf/results/cost/ceilings.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from perf.cost.errors import CompilerToolsMissing
from perf.harness import REPO_ROOT, doc_summary

CEILINGS_PATH = REPO_ROOT / "perf" / "results" / "cost" / "ceilings.json"
SLACK_NOTE = 0.9  # a figure below 90% of its ceiling: suggest lowering the ceiling


@dataclass(frozen=True)
class Guard:
    """One guarded configuration, its ceiling (warp-instructions per kept weight) and the cache
    prefetches its main loop must keep (the Huffman kernel's refills ask L1 for the word rows
    ahead: without them every refill would wait on HBM, which no instruction count shows)."""

    kernel: str
    dtype: str
    batch_bucket: int
    code_bits: int
    index_bits: int
    lanes: tuple[int, int] | None
    ceiling: float
    lane_shape: tuple[int, int] | None = None
    min_loop_prefetches: int = 0
    max_warp_cycles_per_iteration: float | None = None

    def matches(self, config) -> bool:
        if (config.kernel, config.dtype, config.batch_bucket) != (self.kernel, self.dtype, self.batch_bucket):
            return False
        consts = config.launch.constexprs
        if self.lanes is not None:
            return (consts.get("ROWS"), consts.get("PIECES")) == self.lanes
        if self.lane_shape is not None and (consts.get("R"), consts.get("T")) != self.lane_shape:
            return False
        return (config.code_bits, config.index_bits) == (self.code_bits, self.index_bits)

    def describe(self) -> str:
        if self.lanes:
            shape = f"lanes {self.lanes[0]}x{self.lanes[1]}"
        else:
            shape = f"{self.code_bits}+{self.index_bits}"
            if self.lane_shape:
                shape += f" R{self.lane_shape[0]}xT{self.lane_shape[1]}"
        return f"{self.kernel} {self.dtype} {shape} BB{self.batch_bucket}"


def load_guards(path: Path = CEILINGS_PATH) -> tuple[int, list[Guard]]:
    """(architecture, guards) from the ceilings file; ValueError naming a malformed entry."""
    try:
        data = json.loads(Path(path).read_text())
        guards = [
            Guard(
                g["kernel"],
                g["dtype"],
                int(g["batch_bucket"]),
                int(g.get("code_bits", 0)),
                int(g.get("index_bits", 0)),
                tuple(g["lanes"]) if g.get("lanes") else None,
                float(g["max_warp_instructions_per_kept_weight"]),
                tuple(g["lane_shape"]) if g.get("lane_shape") else None,
                int(g.get("min_loop_prefetches", 0)),
                float(g["max_warp_cycles_per_iteration"]) if "max_warp_cycles_per_iteration" in g else None,
            )
            for g in data["guards"]
        ]
        return int(data["arch"]), guards
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a ceilings file ({exc})") from exc


def check_ceilings(path: Path = CEILINGS_PATH) -> list[dict]:
    """Compile each guarded configuration and compare it with its ceiling (one row each)."""
    from perf.cost.compiled import analyze, compile_launch
    from perf.cost.launches import REFERENCE_LAYER, dispatched_configurations
    from perf.cost.layer_stats import build_stats
    from perf.cost.machines import DEFAULT_MACHINE, get_machine
    from perf.cost.roofline import KERNEL_MODELS, warp_alone_cycles
    from workloads import LLM_LAYERS

    arch, guards = load_guards(path)
    widths = sorted({(g.code_bits, g.index_bits) for g in guards if g.lanes is None})
    dtypes = {"float16": "fp16"}
    configs = dispatched_configurations(build_stats(LLM_LAYERS[REFERENCE_LAYER]), dtypes, widths)
    rows = []
    for guard in guards:
        found = [c for c in configs if guard.matches(c)]
        if len(found) != 1:
            raise ValueError(
                f"{path}: {guard.describe()} matches {len(found)} dispatched configurations, not 1"
            )
        launch = found[0].launch
        cost = analyze(
            compile_launch(launch.kernel, launch.args, launch.kwargs, arch),
            found[0].items_per_iteration,
            max(found[0].batch_bucket, 1),
        )
        figure = cost.warp_instructions_per_item
        prefetches = int(cost.counts.per_iteration.get("prefetch", 0))
        cycles = None
        if guard.max_warp_cycles_per_iteration is not None:
            model = KERNEL_MODELS[found[0].family]
            cycles = warp_alone_cycles(get_machine(DEFAULT_MACHINE), model, cost.counts, launch.constexprs)
            if cycles is None:
                raise ValueError(f"{path}: {guard.describe()}: its loop cannot be replayed")
        rows.append(
            {
                "configuration": guard.describe(),
                "arch": arch,
                "warp_instructions_per_kept_weight": round(figure, 4),
                "ceiling": guard.ceiling,
                "loop_prefetches": prefetches,
                "min_loop_prefetches": guard.min_loop_prefetches,
                "ok": figure <= guard.ceiling,
                "prefetches_ok": prefetches >= guard.min_loop_prefetches,
                "could_lower": figure < SLACK_NOTE * guard.ceiling,
                "warp_cycles": cycles,
                "max_warp_cycles": guard.max_warp_cycles_per_iteration,
                "cycles_ok": cycles is None or cycles <= guard.max_warp_cycles_per_iteration,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.cost.ceilings", description=doc_summary(__doc__))
    parser.add_argument("--ceilings", type=Path, default=CEILINGS_PATH)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("ceilings: unset TRITON_INTERPRET to compile", file=sys.stderr)
        return 2
    try:
        rows = check_ceilings(args.ceilings)
    except CompilerToolsMissing as exc:
        print(f"ceilings: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ceilings: {exc}", file=sys.stderr)
        return 2
    for r in rows:
        verdict = "ok" if r["ok"] else "OVER THE CEILING"
        print(
            f"{r['configuration']:<40} sm_{r['arch']}: {r['warp_instructions_per_kept_weight']:.3f} "
            f"warp-instructions per kept weight, ceiling {r['ceiling']:.3f}: {verdict}"
        )
        if r["min_loop_prefetches"]:
            verdict = "ok" if r["prefetches_ok"] else "TOO FEW PREFETCHES"
            wanted = r["min_loop_prefetches"]
            print(f"  {r['loop_prefetches']} cache prefetches a loop iteration, at least {wanted}: {verdict}")
        if r["max_warp_cycles"] is not None:
            verdict = "ok" if r["cycles_ok"] else "TOO SLOW ALONE"
            print(
                f"  {r['warp_cycles']:.0f} cycles an iteration for a warp issuing alone, at most "
                f"{r['max_warp_cycles']:.0f}: {verdict}"
            )
        if r["could_lower"]:
            print(f"  below 90% of its ceiling: lower the ceiling in {args.ceilings} to keep the gain")
    for failed, why in (
        ("ok", "issue more instructions per kept weight than allowed; speed the kernel up, or raise "
         f"the ceiling in {args.ceilings} deliberately"),
        ("cycles_ok", "take more cycles an iteration for a warp issuing alone than allowed; shorten "
         f"the loop's dependent chain, or raise the limit in {args.ceilings}"),
        ("prefetches_ok", "lost the cache prefetches of their loop: without them each refill waits "
         "on HBM (see docs/kernels.md, PREFETCH)"),
    ):  # fmt: skip
        count = sum(1 for r in rows if not r[failed])
        if count:
            print(f"ceilings: {count} configuration(s) {why}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
