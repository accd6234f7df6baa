"""GPU benchmark of the fixed-width Triton kernels, sized for part of ONE device call (~4 minutes).

Phases, each timed, with progress printed as it goes (and skipped when the time budget runs low):

1. environment and device copy bandwidth (a 1 GiB device-to-device copy);
2. correctness on the GPU: fresh random layers and inputs, outputs poisoned with NaN, against the
   float64 PyTorch reference; then one small case under ``compute-sanitizer --tool memcheck``;
3. tuning: lanes per thread of the small-batch kernel at batch 1 and 16 on VGG-6 and Alex-7; the
   winners go into the `Dispatch` that the later phases are given (printed: they are the values
   to record in ``dc_kernels/fixed/launch.py``);
4. timings, batch 1/2/4/8/16/64, of our kernels against ``torch.nn.functional.linear`` on the
   dense layer (cuBLAS, float16/bfloat16/float32) and torch's sparse CSR (cuSPARSE, float32), on the
   nine paper layers (4-bit codes + 4-bit indices; 5-bit codes + 5-bit indices) and LLM layers
   at 10%/30% (4+4 bits); cold (L2 flushed before every call) and warm (CUDA graph replay)
   medians of CUDA-event timings, `perf.gpu_timing` (the Huffman benchmark uses the same timer);
5. the batch from which decode-to-dense + cuBLAS beats the compressed kernel (the dispatcher's
   ``DENSE_CROSSOVER_BATCH``);
6. if time is left, the codebook lookup (shuffle or L1 table) and a sweep of the layout's
   parameters around the builder's choice: chunks per block, rows per block and the schedule's
   lead.

Random layers are built on CPU worker processes while the GPU runs phases 1-2. Writes
``results.csv``, ``crossover.csv``, ``sweep.csv``, ``correctness.csv`` (each row with the run's
provenance columns, `perf.harness.gpu_run_info`, and the timer's settings), ``env.json`` and
``log.txt`` into ``--out`` (default ``perf/results/<gpu>_<date>/``).

``--small`` runs the whole pipeline on CPU under ``TRITON_INTERPRET=1`` with layers scaled down
(a dry run of the script, its timings mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from compress import CompressedMatrix
from dc_kernels.fixed.launch import DEFAULT_DISPATCH, Dispatch
from perf.gpu_run import GpuRun, add_run_arguments, dry_run_spec, matches_reference
from perf.gpu_timing import GpuTimer
from perf.harness import REPO_ROOT, Progress, doc_summary, format_table
from workloads import LLM_LAYERS, PAPER_LAYERS, random_compressed_matrix

BATCHES = (1, 2, 4, 8, 16, 64)
SMALL_BATCHES = (1, 2, 16, 64)  # the --small dry run: one of each kernel path (bucket, chunks, dense)
BASELINES = ("cublas_fp16", "cublas_bf16", "cublas_fp32", "cusparse_fp32")
# (code bits, index bits): EIE's 4+4, and Deep Compression's 5-bit FC codes with the index width
# the layout builder picks (None), as the predictions from the compiled code have them.
PAPER_CONFIGS = ((4, 4), (5, None))
LLM_CONFIGS = ((4, 4),)
CROSSOVER_LAYERS = ("alex7", "vgg6", "llm-4096x14336-d10")
CROSSOVER_BATCHES = (16, 32, 64, 128, 256)


def copy_bandwidth(timer: GpuTimer) -> float:
    """Device copy bandwidth in GB/s (bytes read + written per second), 1 GiB copy."""
    n = (1 << 30) if timer.on_gpu else (16 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=timer.device)
    dst = torch.empty_like(src)
    seconds = timer.warm(lambda: dst.copy_(src), calls=5).median
    return 2 * n / seconds / 1e9


# ---------------------------------------------------------------------------------------- layers
def build_layer(
    name: str, outputs: int, inputs: int, density: float, code_bits: int, index_bits, seed: int,
    arch: int | None, block_rows: int | None = None,
):  # fmt: skip
    """Worker: a random layer and its GPU layout (``block_rows`` None: the builder's choice), as
    NumPy arrays (CPU only, no CUDA); with ``arch`` the kernels its timings launch are compiled
    into Triton's cache meanwhile (`warm_kernels`)."""
    from dc_kernels.fixed.layout import GpuLayout

    matrix = random_compressed_matrix(outputs, inputs, density, code_bits, seed=seed)
    layout = GpuLayout.from_matrix(matrix, index_bits=index_bits, block_rows=block_rows)
    warmed = "not compiled ahead"
    if arch is not None:
        try:
            warmed = f"{warm_kernels(layout, arch)} kernels compiled ahead"
        except Exception as exc:  # the timings compile on their own then
            warmed = f"compiling ahead failed: {type(exc).__name__}: {exc!s:.300}"
    return {
        "warmed": warmed,
        "name": name,
        "matrix": (matrix.shape, matrix.codebook, matrix.row_ptr, matrix.col_idx, matrix.codes, matrix.bits),
        "meta": layout.metadata(),
        "tensors": {k: v.numpy() for k, v in layout.tensors().items()},
    }


def warm_kernels(layout, arch: int, batches=BATCHES) -> int:
    """Compile, for ``sm_<arch>``, every launch that timing ``layout`` at ``batches`` makes (float16
    x, bias), as the dispatcher specializes it (`perf.cost`): a layout's lane shape is a kernel
    constant, so each layer may need its own variants; compiled on the CPU workers while the GPU
    runs the first phases, the timings then find them in Triton's cache. Returns the count."""
    from dc_kernels.fixed import launch as fixed_launch
    from perf.cost.compiled import compile_launch
    from perf.cost.launches import recorded_launches

    bias = torch.empty(layout.out_features, device="meta")
    with recorded_launches() as launches:
        for batch in batches:
            x = torch.empty(batch, layout.in_features, dtype=torch.float16, device="meta")
            fixed_launch.run(x, layout, bias)
    for launch in launches:
        compile_launch(launch.kernel, launch.args, launch.kwargs, arch)
    return len(launches)


def layer_jobs(small: bool, arch: int | None = None) -> list[tuple]:
    """The layers to build: (name, outputs, inputs, density, code bits, index bits, seed, arch,
    block rows); ``arch``: compile their kernels too (None: not, e.g. under the interpreter). The
    dry run's scaled-down layers take 32 rows a block: few programs for the interpreter."""
    jobs = []
    for specs, configs in ((PAPER_LAYERS, PAPER_CONFIGS), (LLM_LAYERS, LLM_CONFIGS)):
        for name, spec in specs.items():
            s = dry_run_spec(spec) if small else spec
            for code_bits, index_bits in configs:
                jobs.append((name, s.outputs, s.inputs, s.weight_density, code_bits, index_bits, 1, arch,
                             32 if small else None))  # fmt: skip
    # Largest first so that the pool finishes early.
    return sorted(jobs, key=lambda j: -j[1] * j[2] * j[3])


# ---------------------------------------------------------------------------------------- phases
def check_correctness(run: GpuRun, small: bool, dispatch: Dispatch) -> tuple[list[dict], Dispatch]:
    """Fresh random layers and inputs against the float64 oracle, outputs poisoned with NaN; the
    rows and the dispatch to use from here on (``dispatch`` with its codebook lookup switched to
    global loads where tl.gather fails to compile or run)."""
    from dc_kernels.fixed import GpuLayout, fixed_linear
    from dc_kernels.reference import CanonicalTensors, reference_linear

    rng = np.random.default_rng()
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    cases = [  # (out, in, density, code bits, index bits, (block rows, chunks) or None: default, batch)
        (1, 1, 1.0, 1, 3, None, 1),  # the narrowest entry (`MIN_ENTRY_BITS`)
        (7, 13, 0.3, 4, None, None, 3),
        (1, 300, 0.2, 5, 4, (1, 32), 2),
        (300, 1, 0.5, 3, None, None, 5),
        (33, 70, 1e-9, 2, 4, (32, 1), 1),
        (64, 64, 1.0, 8, 8, (8, 4), 16),
        (1000, 40000, 0.005, 5, 6, (32, 32), 17),
        (200, 300, 0.1, 4, 4, (4, 16), 9),
    ]
    cases += [(257, 1031, 0.1, b, (b * 3) % 8 + 1, None, 1 + (b * 5) % 17) for b in range(1, 9)]
    cases += [(129, 513, 0.2, 4, 4, None, batch) for batch in (1, 2, 3, 5, 8, 9, 16, 17, 64)]
    if not small:
        cases += [
            (4096, 4096, 0.09, 4, 4, None, 1),
            (4096, 4096, 0.09, 5, None, None, 16),
            (4096, 25088, 0.04, 4, 4, None, 8),
        ]
    else:  # the interpreter: few programs per launch (many rows a block), every kernel path
        cases = [c if c[5] else (*c[:5], (32, 4), c[6]) for c in cases[:6]]
        cases += [(40, 3000, 0.01, 5, 6, (32, 8), 17), (129, 513, 0.2, 4, 4, (32, 4), 9)]
        cases += [(129, 513, 0.2, 4, 4, (32, 4), batch) for batch in (16, 64)]
    device = run.device
    rows = []
    for i, (o, n, d, cb, ib, shape, batch) in enumerate(cases):
        dtype = dtypes[i % 3]
        matrix = random_compressed_matrix(o, n, d, cb, seed=int(rng.integers(2**31)))
        rows_chunks = dict(zip(("block_rows", "chunks"), shape)) if shape else {}
        layout = GpuLayout.from_matrix(matrix, index_bits=ib, **rows_chunks).to(device)
        if i % 2:
            x = torch.randn(2 * n, batch, device=device).to(dtype).T[:, ::2]
        else:
            x = torch.randn(batch, n, device=device).to(dtype)
        bias = torch.randn(o, device=device) if i % 3 else None
        out = torch.full((batch, o), float("nan"), dtype=dtype, device=device)
        try:
            fixed_linear(x, layout, bias, out=out, dispatch=dispatch)
        except Exception as exc:
            if dispatch.gather is False:
                raise
            run.progress(
                f"  tl.gather path failed ({type(exc).__name__}: {str(exc)[:300]}); using global loads"
            )
            dispatch = dataclasses.replace(dispatch, gather=False)
            fixed_linear(x, layout, bias, out=out, dispatch=dispatch)
        expected = reference_linear(x, CanonicalTensors.from_matrix(matrix, device), bias, torch.float64)
        ok, err = matches_reference(out, expected)
        rows.append(
            {"case": i, "out": o, "in": n, "density": d, "code_bits": cb, "index_bits": layout.index_bits,
             "block_rows": layout.block_rows, "chunks": layout.chunks, "batch": batch,
             "dtype": str(dtype).split(".")[-1], "strided": bool(i % 2), "bias": bias is not None,
             "max_abs_err": err, "ok": ok}
        )  # fmt: skip
        if not ok:
            run.progress(f"  FAIL case {rows[-1]}")
    run.progress(
        f"correctness: {sum(r['ok'] for r in rows)}/{len(rows)} cases pass (gather={dispatch.gather})"
    )
    return rows, dispatch


def sanitize_case() -> int:
    """The small launches run under compute-sanitizer (a subprocess of the benchmark)."""
    from dc_kernels.fixed import GpuLayout, decode_dense, fixed_linear

    for o, n, d, cb, ib, batch in (
        (37, 101, 0.2, 5, 6, 1),
        (37, 101, 0.2, 4, 4, 5),
        (9, 300, 0.02, 3, 2, 17),
    ):
        layout = GpuLayout.from_matrix(random_compressed_matrix(o, n, d, cb, seed=5), index_bits=ib).to(
            "cuda"
        )
        x = torch.randn(batch, n, device="cuda", dtype=torch.float16)
        fixed_linear(x, layout, torch.randn(o, device="cuda"))
        decode_dense(layout, torch.bfloat16)
    torch.cuda.synchronize()
    print("sanitize-case done", flush=True)
    return 0


def run_sanitizer(progress: Progress, timeout_s: float) -> str:
    exe = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None
    )
    if exe is None:
        progress("compute-sanitizer: not found, skipped")
        return "not found"
    if timeout_s < 20:
        progress("compute-sanitizer: skipped (time budget)")
        return "skipped"
    cmd = [
        exe,
        "--tool",
        "memcheck",
        "--error-exitcode",
        "3",
        sys.executable,
        "-m",
        "perf.bench_gpu",
        "--sanitize-case",
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        progress(f"compute-sanitizer: timed out after {timeout_s:.0f}s")
        return "timeout"
    summary = re.findall(r"ERROR SUMMARY: .*", proc.stdout + proc.stderr)
    status = "clean" if proc.returncode == 0 else f"exit {proc.returncode}"
    progress(f"compute-sanitizer memcheck: {status}; {summary[-1] if summary else ''}")
    if proc.returncode != 0:
        progress((proc.stdout + proc.stderr)[-3000:])
    return status


class Baselines:
    """Dense (cuBLAS) and sparse CSR (cuSPARSE) versions of a layer."""

    def __init__(self, matrix: CompressedMatrix, device: torch.device) -> None:
        dense32 = matrix.to_dense_tensor(torch.float32, device=device)
        self.dense = {
            torch.float16: dense32.half(),
            torch.bfloat16: dense32.bfloat16(),
            torch.float32: dense32,
        }
        self.csr = dense32.to_sparse_csr()
        self.bias = torch.randn(matrix.out_features, device=device)

    def fns(self, x16: torch.Tensor) -> dict:
        f = torch.nn.functional.linear
        xs = {dt_: x16.to(dt_) for dt_ in self.dense}
        bs = {dt_: self.bias.to(dt_) for dt_ in self.dense}
        xt = xs[torch.float32].T.contiguous()
        return {
            "cublas_fp16": lambda: f(xs[torch.float16], self.dense[torch.float16], bs[torch.float16]),
            "cublas_bf16": lambda: f(xs[torch.bfloat16], self.dense[torch.bfloat16], bs[torch.bfloat16]),
            "cublas_fp32": lambda: f(xs[torch.float32], self.dense[torch.float32], bs[torch.float32]),
            "cusparse_fp32": lambda: self.csr @ xt,
        }


def time_layers(
    run: GpuRun, layers: list[dict], copy_gbps: float, dispatch: Dispatch, batches: tuple[int, ...] = BATCHES
) -> list[dict]:
    """Cold and warm timings of every layer at ``batches`` against the dense and CSR baselines;
    ``results.csv`` is rewritten after each layer (a run cut short keeps what it measured)."""
    rows = []
    baseline_cache: dict = {}
    for item in layers:
        if run.progress.left() < 30:
            run.progress(f"timings: budget low, skipping {item['name']} and later layers")
            break
        name, layout, matrix = item["name"], item["layout"], item["matrix"]
        t0 = time.perf_counter()
        key = (name, matrix.shape)
        if key not in baseline_cache:
            baseline_cache.clear()  # keep one layer's dense copies on the device at a time
            baseline_cache[key] = Baselines(matrix, run.device)
        base = baseline_cache[key]
        try:
            rows += time_one_layer(run, name, layout, matrix, base, copy_gbps, dispatch, batches)
        except Exception as exc:  # report and go on with the next layer
            run.progress(f"timing {name} failed: {type(exc).__name__}: {str(exc)[:500]}")
            continue
        first = rows[-len(batches)]
        run.progress(
            f"timed {name} ({layout.code_bits}+{layout.index_bits} bits, "
            f"{layout.total_bytes() / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f}s; "
            f"batch {first['batch']}: ours {first['ours_cold_us']:.1f} us cold, "
            f"cuBLAS fp16 {first['cublas_fp16_cold_us']:.1f} us"
        )
        run.save("results.csv", rows)
    return rows


def time_one_layer(
    run: GpuRun, name, layout, matrix, base: Baselines, copy_gbps: float, dispatch: Dispatch, batches
) -> list[dict]:
    from dc_kernels.fixed import fixed_linear

    timer = run.timer
    rows = []
    nbytes = layout.total_bytes()
    for batch in batches:
        x = torch.randn(batch, matrix.in_features, device=run.device, dtype=torch.float16)
        path = "dense" if batch >= dispatch.dense_crossover_batch else "spmm"
        row = {"layer": name, "out": matrix.out_features, "in": matrix.in_features,
               "density": round(matrix.density, 4), "nnz": matrix.nnz, "code_bits": layout.code_bits,
               "index_bits": layout.index_bits, "block_rows": layout.block_rows, "chunks": layout.chunks,
               "layout_bytes": nbytes, "bits_per_weight": round(layout.bits_per_kept_weight(), 3),
               "batch": batch, "path": path, "copy_gbps": round(copy_gbps, 1)}  # fmt: skip

        def ours(x=x, layout=layout, bias=base.bias):
            return fixed_linear(x, layout, bias, dispatch=dispatch)

        row["ours_cold_us"] = timer.cold(ours).median_us
        row["ours_warm_us"] = timer.warm(ours).median_us
        for bname, fn in base.fns(x).items():
            row[f"{bname}_cold_us"] = timer.cold(fn).median_us
        row["cublas_fp16_warm_us"] = timer.warm(base.fns(x)["cublas_fp16"]).median_us
        row["ours_cold_gbps"] = nbytes / (row["ours_cold_us"] * 1e-6) / 1e9
        row["share_copy_bw"] = row["ours_cold_gbps"] / copy_gbps
        for bname in BASELINES:
            row[f"speedup_{bname}"] = row[f"{bname}_cold_us"] / row["ours_cold_us"]
        row["speedup_cublas_fp16_warm"] = row["cublas_fp16_warm_us"] / row["ours_warm_us"]
        rows.append(row)
    return rows


def measure_crossover(run: GpuRun, layers: list[dict], dispatch: Dispatch) -> tuple[list[dict], int | None]:
    """Cold times of the small-batch kernel and of decode + cuBLAS at `CROSSOVER_BATCHES`; the
    rows and the median over the layers of the first batch where decode + cuBLAS wins."""
    from dc_kernels.fixed import fixed_linear

    rows = []
    crossovers = []
    by_name = {(it["name"], it["layout"].code_bits): it for it in layers}
    for name in CROSSOVER_LAYERS:
        item = by_name.get((name, 4))
        if item is None or run.progress.left() < 20:
            continue
        layout = item["layout"]
        found = None
        for batch in CROSSOVER_BATCHES:
            x = torch.randn(batch, layout.in_features, device=run.device, dtype=torch.float16)
            spmm, dense = (
                run.timer.cold(
                    lambda x=x, lay=layout, p=path: fixed_linear(x, lay, path=p, dispatch=dispatch)
                ).median_us
                for path in ("spmm", "dense")
            )
            rows.append({"layer": name, "batch": batch, "spmm_cold_us": spmm, "dense_cold_us": dense})
            if found is None and dense <= spmm:
                found = batch
        run.progress(f"crossover {name}: dense path wins from batch {found}")
        crossovers.append(found if found is not None else 2 * CROSSOVER_BATCHES[-1])
    recommended = int(np.median(crossovers)) if crossovers else None
    return rows, recommended


SWEEP_LAYERS = ("vgg6", "alex7")
PLAN_KEYS = ("shape", "lanes_per_thread", "gather")


def _shape_label(shape) -> str:
    return "default" if shape is None else "R{}xT{} lead {}".format(*shape)


def run_plans(
    run: GpuRun, layers: list[dict], plans: list[tuple], phase: str, reserve_s: float, dispatch: Dispatch
) -> list[dict]:
    """Time one small-batch launch for each (layer, batch, layout shape, lanes per thread, gather)
    plan on the layer's 4-bit version (cold), each a variant of ``dispatch``, until only
    ``reserve_s`` of the budget is left. A layout shape is (block rows, chunks, lead) or None for
    the layer's own layout (the builder's choice); gather None: the dispatcher's own choice
    (`Dispatch.use_gather`), recorded as chosen."""
    from dc_kernels.fixed import GpuLayout, KernelConfig
    from dc_kernels.fixed.launch import batch_bucket
    from dc_kernels.fixed.launch import run as run_fixed

    by_name = {(it["name"], it["layout"].code_bits): it for it in layers}
    rows, layouts = [], {}
    for name, batch, shape, lanes, gather in plans:
        if (name, 4) not in by_name:
            continue
        if run.progress.left() < reserve_s:
            run.progress(f"{phase}: budget low, stopped after {len(rows)} of {len(plans)} configurations")
            break
        item = by_name[(name, 4)]
        if (name, shape) not in layouts:
            if shape is None:
                layouts[(name, shape)] = item["layout"]
            else:
                rows_, chunks, lead = shape
                built = GpuLayout.from_matrix(item["matrix"], 4, block_rows=rows_, chunks=chunks, lead=lead)
                layouts[(name, shape)] = built.to(run.device)
        layout = layouts[(name, shape)]
        x = torch.randn(batch, layout.in_features, device=run.device, dtype=torch.float16)
        out = torch.empty(batch, layout.out_features, device=run.device, dtype=torch.float16)
        if gather is None:
            gather = dispatch.use_gather(layout.code_bits)
        config = {**dispatch.spmm, batch_bucket(batch): KernelConfig(lanes)}
        plan = dataclasses.replace(dispatch, spmm=config, gather=gather)
        try:
            us = run.timer.cold(lambda a=(x, layout, None, out, "spmm", plan): run_fixed(*a)).median_us
        except Exception as exc:
            run.progress(
                f"  {phase} config failed: {name} {batch} {_shape_label(shape)} {lanes}: {exc!s:.200}"
            )
            continue
        rows.append({"phase": phase, "layer": name, "batch": batch, "shape": _shape_label(shape),
                     "block_rows": layout.block_rows, "chunks": layout.chunks, "lanes_per_thread": lanes,
                     "gather": gather, "layout_bytes": layout.total_bytes(), "cold_us": us,
                     "gbps": layout.total_bytes() / (us * 1e-6) / 1e9})  # fmt: skip
    return rows


def best_config(rows: list[dict], batch: int) -> dict | None:
    """The configuration with the least total time over the sweep layers at ``batch`` (only
    configurations timed on every layer count)."""
    totals: dict = {}
    for r in rows:
        if r["batch"] == batch:
            totals.setdefault(tuple(r[k] for k in PLAN_KEYS), []).append(r["cold_us"])
    n_layers = max((len(v) for v in totals.values()), default=0)
    complete = {k: sum(v) for k, v in totals.items() if len(v) == n_layers}
    if not complete:
        return None
    key = min(complete, key=complete.get)
    return dict(zip(PLAN_KEYS, key), total_us=complete[key])


def tune(run: GpuRun, layers: list[dict], dispatch: Dispatch) -> tuple[list[dict], Dispatch]:
    """Lanes per thread on the layers' own layouts, batch 1 and 16: the rows, and ``dispatch`` with
    the winners in its table (the dispatch the later phases use; printed, to be recorded in
    dc_kernels/fixed/launch.py)."""
    from dc_kernels.fixed import KernelConfig

    # gather None: tune what the dispatcher will run (its codebook lookup for these widths).
    plans = [(n, batch, None, lanes, None) for batch in (1, 16) for lanes in (1, 2, 4) for n in SWEEP_LAYERS]
    rows = run_plans(run, layers, plans, "tune", 115, dispatch)
    for batch in (1, 16):
        best = best_config(rows, batch)
        if best is None:
            continue
        old = dispatch.spmm[batch]
        tuned = {**dispatch.spmm, batch: KernelConfig(best["lanes_per_thread"])}
        dispatch = dataclasses.replace(dispatch, spmm=tuned)
        run.progress(
            f"tuned batch {batch}: lanes_per_thread={best['lanes_per_thread']} (was {old.lanes_per_thread}); "
            f"total {best['total_us']:.1f} us over {SWEEP_LAYERS}"
        )
    return rows, dispatch


def sweep(run: GpuRun, layers: list[dict], dispatch: Dispatch) -> list[dict]:
    """The codebook lookup (shuffle vs the L1-resident table) at ``dispatch``'s (tuned) table,
    then the layout's parameters around the builder's choice for each sweep layer: half and
    twice the chunks, 16 rows a block, half and twice the lead (layouts built here)."""
    from dc_kernels.fixed.layout import default_lead

    by_name = {(it["name"], it["layout"].code_bits): it for it in layers}
    lookup_plans = [
        (n, batch, None, dispatch.spmm[batch].lanes_per_thread, gather)
        for batch in (1, 16)
        for gather in (True, False)
        for n in SWEEP_LAYERS
    ]
    lookup = run_plans(run, layers, lookup_plans, "lookup", 8, dispatch)
    plans = []
    for batch in (1, 16):
        lanes = dispatch.spmm[batch].lanes_per_thread
        for n in SWEEP_LAYERS:
            item = by_name.get((n, 4))
            if item is None:
                continue
            own = item["layout"]
            lead = default_lead(item["matrix"])
            r, t = own.block_rows, own.chunks
            shapes = [(r, max(1, t // 2), lead), (r, t * 2, lead), (max(1, r // 2), t, lead),
                      (r, t, lead // 2), (r, t, 2 * lead)]  # fmt: skip
            plans += [(n, batch, shape, lanes, None) for shape in shapes if shape[0] * shape[1] <= 1024]
    rows = run_plans(run, layers, plans, "sweep", 8, dispatch)
    for batch in (1, 16):
        at_batch = [r for r in lookup if r["batch"] == batch]
        us = {g: [r["cold_us"] for r in at_batch if r["gather"] is g] for g in (True, False)}
        if all(len(v) == len(SWEEP_LAYERS) for v in us.values()):
            run.progress(
                f"codebook lookup at batch {batch}, 4-bit codes, total over {SWEEP_LAYERS}: "
                f"shuffle {sum(us[True]):.1f} us, L1 table {sum(us[False]):.1f} us"
            )
        for n in SWEEP_LAYERS:
            timed = sorted(
                (r["cold_us"], r["shape"]) for r in rows if r["batch"] == batch and r["layer"] == n
            )
            if timed:
                run.progress(f"sweep {n} batch {batch}: fastest layout {timed[0][1]} ({timed[0][0]:.1f} us)")
    return lookup + rows


def log_results_table(progress: Progress, rows: list[dict]) -> None:
    """The timings as a table in the log: cold times, bandwidth, speedups over the baselines."""
    table = [
        {"layer": r["layer"], "bits": f"{r['code_bits']}+{r['index_bits']}", "MB": r["layout_bytes"] / 1e6,
         "B": r["batch"], "ours us": r["ours_cold_us"], "warm": r["ours_warm_us"],
         "GB/s": r["ours_cold_gbps"], "%copy": 100 * r["share_copy_bw"], "x fp16": r["speedup_cublas_fp16"],
         "x bf16": r["speedup_cublas_bf16"], "x fp32": r["speedup_cublas_fp32"],
         "x csr": r["speedup_cusparse_fp32"], "x fp16 warm": r["speedup_cublas_fp16_warm"]}
        for r in rows
    ]  # fmt: skip
    progress("")
    columns = ["layer", "bits", "MB", "B", "ours us", "warm", "GB/s", "%copy", "x fp16", "x bf16", "x fp32",
               "x csr", "x fp16 warm"]  # fmt: skip
    for line in format_table(table, columns):
        progress(line)


LARGE_LAYERS = ("alex6", "alex7", "vgg6", "vgg7")


def check_targets(progress: Progress, rows: list[dict]) -> None:
    """The fixed-width kernels' speed targets (GPU, cold timings, 5-bit codes as the predictions
    have them): print each with PASS or FAIL."""

    def pick(layer, bits, batch):
        return next(
            (r for r in rows if r["layer"] == layer and r["code_bits"] == bits and r["batch"] == batch), None
        )

    checks = []
    for layer, want in (("vgg6", 10.0), ("alex7", 4.0)):
        r = pick(layer, 5, 1)
        if r:
            checks.append((f"{layer} batch 1: >= {want}x vs cuBLAS fp16", r["speedup_cublas_fp16"], want))
    for layer in PAPER_LAYERS:
        r = pick(layer, 5, 1)
        if r:
            checks.append((f"{layer} batch 1: >= 1x vs cuBLAS fp16", r["speedup_cublas_fp16"], 1.0))
    for layer in LARGE_LAYERS:
        r = pick(layer, 5, 16)
        if r:
            checks.append((f"{layer} batch 16: >= 1.5x vs cuBLAS fp16", r["speedup_cublas_fp16"], 1.5))
    progress("")
    for label, value, want in checks:
        progress(f"target {'PASS' if value >= want else 'FAIL'}: {label} (measured {value:.2f})")


def guarded(progress: Progress, phase: str, fn, fallback, *args):
    """Run a later phase; an exception is logged and the benchmark goes on with the next one."""
    try:
        return fn(*args)
    except Exception:
        progress(f"{phase} phase failed:\n{traceback.format_exc()[-3000:]}")
        return fallback


def load_layers(futures: list, device: torch.device) -> list[dict]:
    """The worker processes' layers on ``device``, in catalog order (paper layers, then LLM layers)."""
    from dc_kernels.fixed.layout import GpuLayout

    layers = []
    for fut in futures:
        res = fut.result()
        shape, codebook, row_ptr, col_idx, codes, bits = res["matrix"]
        matrix = CompressedMatrix(shape, codebook, row_ptr, col_idx, codes, bits)
        tensors = {k: torch.from_numpy(v).to(device) for k, v in res["tensors"].items()}
        layers.append(
            {"name": res["name"], "matrix": matrix, "layout": GpuLayout.from_state(tensors, res["meta"]),
             "warmed": res["warmed"]}
        )  # fmt: skip
    order = {name: i for i, name in enumerate([*PAPER_LAYERS, *LLM_LAYERS])}
    layers.sort(key=lambda it: (order[it["name"]], it["layout"].code_bits))
    return layers


def _compile_arch() -> int | None:
    """The GPU's architecture for compiling ahead on the CPU workers (None: not a known one)."""
    from perf.cost.tools import ARCHS

    major, minor = torch.cuda.get_device_capability()
    arch = 10 * major + minor
    return arch if arch in ARCHS else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    add_run_arguments(parser, 230.0, "seconds for the whole run")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--sanitize-case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sanitize_case:
        return sanitize_case()
    run = GpuRun.from_args(args, log_name="log.txt", script="bench_gpu")
    if run is None:
        return 2
    # Build the random layers on CPU worker processes while the GPU works.
    # "spawn": forking a process that has imported torch (threads) can deadlock.
    pool = ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=mp.get_context("spawn"))
    arch = None if args.small else _compile_arch()
    futures = [pool.submit(build_layer, *job) for job in layer_jobs(args.small, arch)]
    progress, env = run.progress, dict(run.info)
    progress(f"bench_gpu: {json.dumps(env)}; output {run.out_dir}")
    (run.out_dir / "env.json").write_text(json.dumps(env, indent=1))

    t0 = time.perf_counter()
    copy_gbps = copy_bandwidth(run.timer)
    progress(f"copy bandwidth: {copy_gbps:.0f} GB/s ({time.perf_counter() - t0:.1f}s)")

    t0 = time.perf_counter()
    correctness, dispatch = check_correctness(run, args.small, DEFAULT_DISPATCH)
    run.save("correctness.csv", correctness)
    progress(f"correctness phase: {time.perf_counter() - t0:.1f}s")
    sanitizer = "skipped (cpu)"
    if not args.small:
        sanitizer = guarded(
            progress, "sanitizer", run_sanitizer, "error", progress, min(45.0, progress.left() - 170)
        )

    t0 = time.perf_counter()
    layers = load_layers(futures, run.device)
    pool.shutdown()
    progress(f"layers ready ({len(layers)}; waited {time.perf_counter() - t0:.1f}s)")
    for item in layers:
        progress(f"  {item['name']} {item['layout'].code_bits}-bit: {item['warmed']}")

    t0 = time.perf_counter()
    tune_rows = []
    if progress.left() > 140:
        tune_rows, dispatch = guarded(progress, "tune", tune, ([], dispatch), run, layers, dispatch)
    progress(f"tune phase: {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    rows = time_layers(run, layers, copy_gbps, dispatch, SMALL_BATCHES if args.small else BATCHES)
    progress(f"timing phase: {time.perf_counter() - t0:.1f}s")
    log_results_table(progress, rows)
    check_targets(progress, rows)

    t0 = time.perf_counter()
    cross_rows, recommended = guarded(
        progress, "crossover", measure_crossover, ([], None), run, layers, dispatch
    )
    run.save("crossover.csv", cross_rows)
    progress(
        f"crossover phase: {time.perf_counter() - t0:.1f}s; measured DENSE_CROSSOVER_BATCH = {recommended} "
        f"(dispatcher uses {dispatch.dense_crossover_batch})"
    )

    t0 = time.perf_counter()
    sweep_rows = guarded(progress, "sweep", sweep, [], run, layers, dispatch) if progress.left() > 15 else []
    run.save("sweep.csv", tune_rows + sweep_rows)
    progress(f"sweep phase: {time.perf_counter() - t0:.1f}s")

    env.update(copy_gbps=copy_gbps, sanitizer=sanitizer, gather=dispatch.gather,
               correctness_pass=sum(r["ok"] for r in correctness), correctness_cases=len(correctness),
               measured_crossover=recommended,
               spmm_configs={bb: vars(c) for bb, c in dispatch.spmm.items()})  # fmt: skip
    (run.out_dir / "env.json").write_text(json.dumps(env, indent=1))
    failed = [r for r in correctness if not r["ok"]]
    progress(f"done in {progress.elapsed():.0f}s; results in {run.out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
