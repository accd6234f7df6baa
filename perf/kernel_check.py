"""`dcomp check-kernels`: compile every kernel configuration the dispatcher can choose, ahead of
time, for sm_80 and sm_90 (no GPU needed), and report registers, shared memory and spills;
``--cost`` adds the main loop's SASS instructions per kept weight (`perf.cost`).

Each configuration is compiled as the dispatcher's launch on a reference layer (a 4096 x 4096
projection) specializes it: the launch is recorded from the launchers (`perf.cost.launches`) and
specialized by Triton's own binder, so integers equal to 1 (a contiguous x's stride, batch 1) are
compiled in and aligned pointers and multiples of 16 carry the divisibility hint. Registers come
from the cubin; spill bytes are the widths of its local-memory loads and stores (``LDL``/``STL``).
Disassembly is cached by the cubin's hash (`perf.cost.compiled`), so reruns are faster.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

from dc_kernels.fixed.layout import MIN_ENTRY_BITS, index_widths
from perf.cost.compiled import analyze, compile_launch
from perf.cost.errors import CompilerToolsMissing, UnknownArchitecture
from perf.cost.launches import DTYPES, REFERENCE_LAYER, Configuration, dispatched_configurations
from perf.cost.tools import ARCHS, check_arch, missing_tools, triton_version
from perf.harness import doc_summary

# (code_bits, index_bits): the widest entry with the L1-table codebook lookup (8+8), slots crossing
# words with the shuffle lookup (5+6), the narrowest codebook and entry (1+3: entries are at least
# `MIN_ENTRY_BITS` wide) and EIE's 4+4.
WIDTHS = ((8, 8), (5, 6), (1, 3), (4, 4))
ALL_WIDTHS = tuple((c, i) for c in range(1, 9) for i in index_widths(c))


@dataclass
class CompileResult:
    kernel: str
    arch: int
    dtype: str
    code_bits: int
    index_bits: int
    batch_bucket: int
    block: int
    num_warps: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared_bytes: int
    seconds: float
    cost: dict = field(default_factory=dict)


def reference_configurations(dtypes: list[str] | None = None, widths=WIDTHS) -> list[Configuration]:
    """Every dispatched configuration for ``dtypes`` (torch names) and fixed-width ``widths``,
    recorded on the reference layer."""
    from perf.cost.layer_stats import build_stats
    from workloads import LLM_LAYERS

    unknown = [d for d in dtypes or () if d not in DTYPES]
    if unknown:
        raise ValueError(f"unknown dtypes {unknown}; choose from {list(DTYPES)}")
    reference = build_stats(LLM_LAYERS[REFERENCE_LAYER])  # about a second; no cache file written
    return dispatched_configurations(reference, {d: DTYPES[d] for d in dtypes or DTYPES}, widths)


def check_configuration(config: Configuration, arch: int) -> CompileResult:
    """Compile ``config`` for ``sm_<arch>`` and measure its compiled cost."""
    started = time.perf_counter()
    launch = config.launch
    compiled = compile_launch(launch.kernel, launch.args, launch.kwargs, arch)
    cost = analyze(compiled, config.items_per_iteration, max(config.batch_bucket, 1))
    return CompileResult(
        config.kernel, arch, config.dtype, config.code_bits, config.index_bits, config.batch_bucket,
        config.block, cost.num_warps, cost.registers, cost.spill_store_bytes, cost.spill_load_bytes,
        cost.shared_bytes, round(time.perf_counter() - started, 2), cost.as_dict(),
    )  # fmt: skip


_WORKER: dict = {}


def _worker_start(dtypes, widths) -> None:
    """A worker process records the configurations once (launch arguments are not picklable)."""
    _WORKER["configs"] = reference_configurations(dtypes, widths)


def _worker_check(index: int, arch: int) -> CompileResult:
    return check_configuration(_WORKER["configs"][index], arch)


def default_jobs() -> int:
    """Compile processes: one per core, at most 2 (each holds torch and Triton, ~0.4 GB)."""
    return max(1, min(2, os.cpu_count() or 1))


def run_check(
    dtypes: list[str] | None = None, widths=WIDTHS, archs=ARCHS, progress=None, jobs: int = 1
) -> list[CompileResult]:
    """Compile and measure every dispatched configuration for each of ``archs``, in ``jobs``
    processes (results in configuration order whatever the order they finish in)."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 replaces compilation; unset it for the compile check")
    for arch in archs:
        check_arch(arch)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    missing = missing_tools()
    if missing:
        raise CompilerToolsMissing(missing)
    configs = reference_configurations(dtypes, widths)
    tasks = [(index, arch) for index in range(len(configs)) for arch in archs]
    if jobs == 1:
        results = []
        for index, arch in tasks:
            results.append(check_configuration(configs[index], arch))
            if progress:
                progress(results[-1])
        return results
    context = multiprocessing.get_context("spawn")  # torch's threads make fork unsafe
    done: dict[tuple[int, int], CompileResult] = {}
    with ProcessPoolExecutor(jobs, context, initializer=_worker_start, initargs=(dtypes, widths)) as pool:
        futures = {pool.submit(_worker_check, index, arch): (index, arch) for index, arch in tasks}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            if progress:
                progress(done[futures[future]])
    return [done[task] for task in tasks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dcomp check-kernels", description=doc_summary(__doc__))
    parser.add_argument("--json", action="store_true", help="print one JSON list instead of a table")
    parser.add_argument(
        "--cost",
        action="store_true",
        help="add the compiled main loop's cost: instructions per iteration by class, warp-instructions "
        "per kept weight (and per batch column), resident CTAs and warps per SM",
    )
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--archs", nargs="+", type=int, default=list(ARCHS), help=f"of {list(ARCHS)}")
    parser.add_argument(
        "--jobs", type=int, default=default_jobs(), help="compile processes (default: cores, at most 2)"
    )
    parser.add_argument(
        "--all-widths",
        action="store_true",
        help=f"every (code bits, index bits) in 1..8 x 1..8 with entries of at least {MIN_ENTRY_BITS} bits "
        f"instead of the representative {WIDTHS} (about 4,500 compilations)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("check-kernels: unset TRITON_INTERPRET to compile", file=sys.stderr)
        return 2
    header = "kernel                 sm dtype     bits  BB lanes warps  regs spill_st spill_ld  smem"
    if args.cost:
        header += "  CTAs  loop_instr  warp_instr/kept_weight  /column"

    def show(r: CompileResult) -> None:
        line = (
            f"{r.kernel:<22} {r.arch:>2} {r.dtype:<9} {r.code_bits}+{r.index_bits} {r.batch_bucket:>3} "
            f"{r.block:>5} {r.num_warps:>5} {r.registers:>5} {r.spill_stores:>8} {r.spill_loads:>8} "
            f"{r.shared_bytes:>5}"
        )
        if args.cost:
            c = r.cost
            line += (
                f"  {c['ctas_per_sm']:>4} {c.get('loop_instructions', '-'):>11} "
                f"{c['warp_instructions_per_item']:>23} {c['warp_instructions_per_item_column']:>8}"
            )
        print(line, flush=True)

    if not args.json:
        print(header, flush=True)
    widths = ALL_WIDTHS if args.all_widths else WIDTHS
    started = time.perf_counter()
    try:
        results = run_check(
            args.dtypes, widths, tuple(args.archs), progress=None if args.json else show, jobs=args.jobs
        )
    except (CompilerToolsMissing, UnknownArchitecture, ValueError) as exc:
        print(f"check-kernels: {exc}", file=sys.stderr)
        return 2
    rows = [asdict(r) for r in results]
    if not args.cost:
        for row in rows:
            row.pop("cost")
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(
            f"{len(results)} configurations in {time.perf_counter() - started:.0f} s (Triton "
            f"{triton_version()})",
            flush=True,
        )
    spills = [r for r in results if r.spill_stores or r.spill_loads]
    if spills:
        print(f"check-kernels: {len(spills)} configurations spill registers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
