"""GPU benchmark of the compressed-layer Triton kernels, sized for ONE device call (< 6 minutes).

Phases, each timed, with progress printed as it goes (and skipped when the time budget runs low):

1. environment and device copy bandwidth (a 1 GiB device-to-device copy);
2. correctness on the GPU: fresh random layers and inputs, outputs poisoned with NaN, against the
   float64 PyTorch reference; then one small case under ``compute-sanitizer --tool memcheck``;
3. tuning: tile entries x warps of the small-batch kernel at batch 1 and 16 on VGG-6 and Alex-7;
   the winners replace the dispatcher's table for the rest of the run (print them: they are the
   values to record in ``dc_kernels/fixed/launch.py``);
4. timings, batch 1/2/4/8/16/64, of our kernels against ``torch.nn.functional.linear`` on the
   dense layer (cuBLAS, float16/bfloat16/float32) and torch's sparse CSR (cuSPARSE, float32), on the
   nine paper layers (4-bit codes + 4-bit indices; 5-bit codes + 5-bit indices) and LLM layers
   at 10%/30% (4+4 bits); cold = an L2 flush (a 512 MiB write) before every timed call,
   warm = a CUDA graph of 50 back-to-back calls; medians of CUDA-event timings;
5. the batch from which decode-to-dense + cuBLAS beats the compressed kernel (the dispatcher's
   ``DENSE_CROSSOVER_BATCH``);
6. a sweep of slice rows (a layout parameter), if time is left.

Random layers are built on CPU worker processes while the GPU runs phases 1-2. Writes
``results.csv``, ``crossover.csv``, ``sweep.csv``, ``correctness.csv``, ``env.json`` and
``log.txt`` into ``--out`` (default ``perf/results/<gpu>_<date>/``).

``--small`` runs the whole pipeline on CPU under ``TRITON_INTERPRET=1`` with layers scaled down
(a dry run of the script, its timings mean nothing).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from compress.matrix import CompressedMatrix
from compress.paper_layers import LLM_LAYERS, PAPER_LAYERS, LayerSpec
from compress.synthetic import random_compressed_matrix
from dc_kernels.fixed.launch import DEFAULT_DISPATCH, Dispatch

# The fixed form's dispatch this run uses: the library default, then what the tune phase finds
# (and the codebook lookup without tl.gather where the correctness phase saw it fail).
DISPATCH: Dispatch = DEFAULT_DISPATCH

BATCHES = (1, 2, 4, 8, 16, 64)
BASELINES = ("cublas_fp16", "cublas_bf16", "cublas_fp32", "cusparse_fp32")
# (code bits, index bits): EIE's 4+4 and Deep Compression's 5-bit FC codes with 5-bit indices;
# fixed widths keep the number of compiled kernel variants small.
PAPER_CONFIGS = ((4, 4), (5, 5))
LLM_CONFIGS = ((4, 4),)
CROSSOVER_LAYERS = ("alex7", "vgg6", "llm-4096x14336-d10")
CROSSOVER_BATCHES = (16, 32, 64, 128, 256)
FLUSH_BYTES = 512 << 20
ROOT = Path(__file__).resolve().parents[1]


class Run:
    """Output directory, log file, time budget."""

    def __init__(self, out_dir: Path, budget_s: float) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out_dir / "log.txt", "a", encoding="utf-8")  # noqa: SIM115
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def log(self, *parts) -> None:
        line = " ".join(str(p) for p in parts)
        stamp = f"[{time.perf_counter() - self.start:6.1f}s]"
        print(stamp, line, flush=True)
        self.log_file.write(f"{stamp} {line}\n")
        self.log_file.flush()

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def write_csv(self, name: str, rows: list[dict]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with open(self.out_dir / name, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


# ---------------------------------------------------------------------------------------- timing
class Timer:
    """Cold and warm medians in microseconds (CUDA events on GPU, wall clock on CPU)."""

    def __init__(self, device: torch.device, cold_runs: int = 25) -> None:
        self.device = device
        self.cold_runs = cold_runs
        self.flush = (
            torch.empty(FLUSH_BYTES, dtype=torch.int8, device=device) if device.type == "cuda" else None
        )

    def cold(self, fn) -> float:
        fn()
        if self.flush is None:
            return self._cpu(fn, 3)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.cold_runs)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.cold_runs)]
        for s, e in zip(starts, ends):
            self.flush.zero_()  # evicts the layer, x and y from L2 (512 MiB >> 60 MiB)
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return float(np.median([s.elapsed_time(e) for s, e in zip(starts, ends)])) * 1e3

    def warm(self, fn, calls: int = 50, replays: int = 7) -> float:
        fn()
        if self.flush is None:
            return self._cpu(fn, 3)
        torch.cuda.synchronize()
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(calls):
                    fn()
            run = graph.replay
        except Exception:  # not capturable (e.g. a cuSPARSE path): back-to-back eager calls
            torch.cuda.synchronize()

            def run():
                for _ in range(calls):
                    fn()

        times = []
        for _ in range(replays):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            run()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e) / calls)
        return float(np.median(times)) * 1e3

    @staticmethod
    def _cpu(fn, n: int) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times)) * 1e6


def copy_bandwidth(timer: Timer, device: torch.device) -> float:
    """Device copy bandwidth in GB/s (bytes read + written per second), 1 GiB copy."""
    n = (1 << 30) if device.type == "cuda" else (16 << 20)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    us = timer.warm(lambda: dst.copy_(src), calls=5, replays=5)
    return 2 * n / (us * 1e-6) / 1e9


# ---------------------------------------------------------------------------------------- layers
def scaled(spec: LayerSpec, small: bool) -> LayerSpec:
    if not small:
        return spec
    return LayerSpec(spec.name, max(spec.inputs // 64, 3), max(spec.outputs // 64, 2), spec.weight_density)


def build_layer(name: str, outputs: int, inputs: int, density: float, code_bits: int, index_bits, seed: int):
    """Worker: a random layer and its GPU layout, as NumPy arrays (CPU only, no CUDA)."""
    from dc_kernels.fixed.layout import GpuLayout

    matrix = random_compressed_matrix(outputs, inputs, density, code_bits, seed=seed)
    layout = GpuLayout.from_matrix(matrix, index_bits=index_bits)
    return {
        "name": name,
        "matrix": (matrix.shape, matrix.codebook, matrix.row_ptr, matrix.col_idx, matrix.codes, matrix.bits),
        "meta": layout.metadata(),
        "tensors": {k: v.numpy() for k, v in layout.tensors().items()},
    }


def layer_jobs(small: bool) -> list[tuple]:
    jobs = []
    for specs, configs in ((PAPER_LAYERS, PAPER_CONFIGS), (LLM_LAYERS, LLM_CONFIGS)):
        for name, spec in specs.items():
            s = scaled(spec, small)
            for code_bits, index_bits in configs:
                jobs.append((name, s.outputs, s.inputs, s.weight_density, code_bits, index_bits, 1))
    # Largest first so that the pool finishes early.
    return sorted(jobs, key=lambda j: -j[1] * j[2] * j[3])


# ---------------------------------------------------------------------------------------- phases
def check_correctness(run: Run, device: torch.device, small: bool) -> list[dict]:
    global DISPATCH
    from dc_kernels.fixed import GpuLayout, fixed_linear
    from dc_kernels.reference import CanonicalTensors, reference_linear

    rng = np.random.default_rng()
    dtypes = (torch.float32, torch.float16, torch.bfloat16)
    tol = {torch.float32: (1e-4, 1e-5), torch.float16: (1e-2, 2e-3), torch.bfloat16: (2e-2, 1e-2)}
    cases = [  # (out, in, density, code bits, index bits, slice rows, batch)
        (1, 1, 1.0, 1, 1, 4, 1),
        (7, 13, 0.3, 4, None, 4, 3),
        (1, 300, 0.2, 5, 4, 4, 2),
        (300, 1, 0.5, 3, None, 4, 5),
        (33, 70, 1e-9, 2, 4, 4, 1),
        (64, 64, 1.0, 8, 8, 4, 16),
        (1000, 4097, 0.05, 5, 6, 16, 17),
        (200, 300, 0.1, 4, 4, 1, 9),
    ]
    cases += [(257, 1031, 0.1, b, (b * 3) % 8 + 1, 4, 1 + (b * 5) % 17) for b in range(1, 9)]
    cases += [(129, 513, 0.2, 4, 4, 4, batch) for batch in (1, 2, 3, 5, 8, 9, 16, 17, 64)]
    if not small:
        cases += [
            (4096, 4096, 0.09, 4, 4, 4, 1),
            (4096, 4096, 0.09, 5, None, 4, 16),
            (4096, 25088, 0.04, 4, 4, 4, 8),
        ]
    else:
        cases = cases[:8] + cases[-3:]
    rows = []
    for i, (o, n, d, cb, ib, r, batch) in enumerate(cases):
        dtype = dtypes[i % 3]
        matrix = random_compressed_matrix(o, n, d, cb, seed=int(rng.integers(2**31)))
        layout = GpuLayout.from_matrix(matrix, index_bits=ib, slice_rows=r).to(device)
        if i % 2:
            x = torch.randn(2 * n, batch, device=device).to(dtype).T[:, ::2]
        else:
            x = torch.randn(batch, n, device=device).to(dtype)
        bias = torch.randn(o, device=device) if i % 3 else None
        out = torch.full((batch, o), float("nan"), dtype=dtype, device=device)
        try:
            fixed_linear(x, layout, bias, out=out, dispatch=DISPATCH)
        except Exception as exc:
            if DISPATCH.gather is False:
                raise
            run.log(f"  tl.gather path failed ({type(exc).__name__}: {str(exc)[:300]}); using global loads")
            DISPATCH = dataclasses.replace(DISPATCH, gather=False)
            fixed_linear(x, layout, bias, out=out, dispatch=DISPATCH)
        expected = reference_linear(x, CanonicalTensors.from_matrix(matrix, device), bias, torch.float64)
        rtol, atol = tol[dtype]
        scale = 1 + float(expected.float().abs().max())
        err = float((out.float() - expected.float()).abs().max())
        ok = bool(torch.isfinite(out).all()) and torch.allclose(
            out.float(), expected.float(), rtol=rtol, atol=atol * scale
        )
        rows.append(
            {"case": i, "out": o, "in": n, "density": d, "code_bits": cb, "index_bits": layout.index_bits,
             "slice_rows": r, "batch": batch, "dtype": str(dtype).split(".")[-1], "strided": bool(i % 2),
             "bias": bias is not None, "max_abs_err": err, "ok": ok}
        )  # fmt: skip
        if not ok:
            run.log(f"  FAIL case {rows[-1]}")
    run.log(
        f"correctness: {sum(r['ok'] for r in rows)}/{len(rows)} cases pass (gather={DISPATCH.gather})"
    )
    return rows


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


def run_sanitizer(run: Run, timeout_s: float) -> str:
    exe = shutil.which("compute-sanitizer") or next(
        (p for p in ("/usr/local/cuda/bin/compute-sanitizer",) if os.path.exists(p)), None
    )
    if exe is None:
        run.log("compute-sanitizer: not found, skipped")
        return "not found"
    if timeout_s < 20:
        run.log("compute-sanitizer: skipped (time budget)")
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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        run.log(f"compute-sanitizer: timed out after {timeout_s:.0f}s")
        return "timeout"
    summary = re.findall(r"ERROR SUMMARY: .*", proc.stdout + proc.stderr)
    status = "clean" if proc.returncode == 0 else f"exit {proc.returncode}"
    run.log(f"compute-sanitizer memcheck: {status}; {summary[-1] if summary else ''}")
    if proc.returncode != 0:
        run.log((proc.stdout + proc.stderr)[-3000:])
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


def time_layers(run, timer, device, layers, copy_gbps, env) -> list[dict]:
    rows = []
    baseline_cache: dict = {}
    for item in layers:
        if run.left() < 30:
            run.log(f"timings: budget low, skipping {item['name']} and later layers")
            break
        name, layout, matrix = item["name"], item["layout"], item["matrix"]
        t0 = time.perf_counter()
        key = (name, matrix.shape)
        if key not in baseline_cache:
            baseline_cache.clear()  # keep one layer's dense copies on the device at a time
            baseline_cache[key] = Baselines(matrix, device)
        base = baseline_cache[key]
        try:
            rows += time_one_layer(timer, device, name, layout, matrix, base, copy_gbps, env)
        except Exception as exc:  # report and go on with the next layer
            run.log(f"timing {name} failed: {type(exc).__name__}: {str(exc)[:500]}")
            continue
        first = rows[-len(BATCHES)]
        run.log(
            f"timed {name} ({layout.code_bits}+{layout.index_bits} bits, "
            f"{layout.total_bytes() / 1e6:.2f} MB) "
            f"in {time.perf_counter() - t0:.1f}s; batch 1: ours {first['ours_cold_us']:.1f} us "
            f"cold, cuBLAS fp16 {first['cublas_fp16_cold_us']:.1f} us"
        )
        run.write_csv("results.csv", rows)
    return rows


def time_one_layer(timer, device, name, layout, matrix, base, copy_gbps, env) -> list[dict]:
    from dc_kernels.fixed import fixed_linear

    rows = []
    nbytes = layout.total_bytes()
    for batch in BATCHES:
        x = torch.randn(batch, matrix.in_features, device=device, dtype=torch.float16)
        path = "dense" if batch >= DISPATCH.dense_crossover_batch else "spmm"
        row = {**env, "layer": name, "out": matrix.out_features, "in": matrix.in_features,
               "density": round(matrix.density, 4), "nnz": matrix.nnz, "code_bits": layout.code_bits,
               "index_bits": layout.index_bits, "slice_rows": layout.slice_rows,
               "layout_bytes": nbytes, "bits_per_weight": round(layout.bits_per_kept_weight(), 3),
               "batch": batch, "path": path, "copy_gbps": round(copy_gbps, 1)}  # fmt: skip

        def ours(x=x, layout=layout, bias=base.bias):
            return fixed_linear(x, layout, bias, dispatch=DISPATCH)

        row["ours_cold_us"] = timer.cold(ours)
        row["ours_warm_us"] = timer.warm(ours)
        for bname, fn in base.fns(x).items():
            row[f"{bname}_cold_us"] = timer.cold(fn)
        row["cublas_fp16_warm_us"] = timer.warm(base.fns(x)["cublas_fp16"])
        row["ours_cold_gbps"] = nbytes / (row["ours_cold_us"] * 1e-6) / 1e9
        row["share_copy_bw"] = row["ours_cold_gbps"] / copy_gbps
        for bname in BASELINES:
            row[f"speedup_{bname}"] = row[f"{bname}_cold_us"] / row["ours_cold_us"]
        row["speedup_cublas_fp16_warm"] = row["cublas_fp16_warm_us"] / row["ours_warm_us"]
        rows.append(row)
    return rows


def measure_crossover(run, timer, device, layers) -> tuple[list[dict], int | None]:
    from dc_kernels.fixed import fixed_linear

    rows = []
    crossovers = []
    by_name = {(it["name"], it["layout"].code_bits): it for it in layers}
    for name in CROSSOVER_LAYERS:
        item = by_name.get((name, 4))
        if item is None or run.left() < 20:
            continue
        layout = item["layout"]
        found = None
        for batch in CROSSOVER_BATCHES:
            x = torch.randn(batch, layout.in_features, device=device, dtype=torch.float16)
            spmm = timer.cold(lambda x=x, lay=layout: fixed_linear(x, lay, path="spmm", dispatch=DISPATCH))
            dense = timer.cold(lambda x=x, lay=layout: fixed_linear(x, lay, path="dense", dispatch=DISPATCH))
            rows.append({"layer": name, "batch": batch, "spmm_cold_us": spmm, "dense_cold_us": dense})
            if found is None and dense <= spmm:
                found = batch
        run.log(f"crossover {name}: dense path wins from batch {found}")
        crossovers.append(found if found is not None else 2 * CROSSOVER_BATCHES[-1])
    recommended = int(np.median(crossovers)) if crossovers else None
    return rows, recommended


SWEEP_LAYERS = ("vgg6", "alex7")


def run_plans(run, timer, device, layers, plans, phase: str, reserve_s: float) -> list[dict]:
    """Time one small-batch launch for each (layer, batch, slice_rows, tile_entries, warps,
    gather) plan on the layer's 4-bit version (cold), until only ``reserve_s`` of the budget is
    left; gather None: the dispatcher's own choice (`Dispatch.use_gather`), recorded as chosen."""
    from dc_kernels.fixed import GpuLayout, KernelConfig
    from dc_kernels.fixed.launch import batch_bucket
    from dc_kernels.fixed.launch import run as run_fixed

    by_name = {(it["name"], it["layout"].code_bits): it for it in layers}
    rows, layouts = [], {}
    for name, batch, slice_rows, tile, warps, gather in plans:
        if (name, 4) not in by_name:
            continue
        if run.left() < reserve_s:
            run.log(f"{phase}: budget low, stopped after {len(rows)} of {len(plans)} configurations")
            break
        item = by_name[(name, 4)]
        if slice_rows == item["layout"].slice_rows and item["layout"].index_bits == 4:
            layouts[(name, slice_rows)] = item["layout"]
        if (name, slice_rows) not in layouts:
            layouts[(name, slice_rows)] = GpuLayout.from_matrix(item["matrix"], 4, slice_rows).to(device)
        layout = layouts[(name, slice_rows)]
        # Column-major x for batch > 1, as triton_linear passes it.
        x = torch.randn(layout.in_features, batch, device=device, dtype=torch.float16).T
        out = torch.empty(batch, layout.out_features, device=device, dtype=torch.float16)
        if gather is None:
            gather = DISPATCH.use_gather(layout.code_bits, layout.slice_rows, warps)
        config = {batch_bucket(batch): KernelConfig(tile, warps)}
        plan = dataclasses.replace(DISPATCH, spmm=config, gather=gather)
        try:
            us = timer.cold(lambda a=(x, layout, None, out, "spmm", plan): run_fixed(*a))
        except Exception as exc:
            run.log(f"  {phase} config failed: {name} {batch} {slice_rows} {tile} {warps}: {exc!s:.200}")
            continue
        rows.append({"phase": phase, "layer": name, "batch": batch, "slice_rows": slice_rows,
                     "tile_entries": tile, "num_warps": warps, "gather": gather, "cold_us": us,
                     "gbps": layout.total_bytes() / (us * 1e-6) / 1e9})  # fmt: skip
    return rows


def best_config(rows: list[dict], batch: int) -> dict | None:
    """The configuration with the least total time over the sweep layers at ``batch`` (only
    configurations timed on every layer count)."""
    totals: dict = {}
    for r in rows:
        if r["batch"] == batch:
            key = (r["slice_rows"], r["tile_entries"], r["num_warps"], r["gather"])
            totals.setdefault(key, []).append(r["cold_us"])
    n_layers = max((len(v) for v in totals.values()), default=0)
    complete = {k: sum(v) for k, v in totals.items() if len(v) == n_layers}
    if not complete:
        return None
    key = min(complete, key=complete.get)
    return dict(zip(("slice_rows", "tile_entries", "num_warps", "gather"), key), total_us=complete[key])


def tune(run, timer, device, layers) -> list[dict]:
    """Tile entries x warps at the default slice rows, batch 1 and 16; the winners replace the
    dispatcher's table for the rest of the run (and are printed, to be recorded in
    dc_kernels/fixed/launch.py)."""
    global DISPATCH
    from dc_kernels.fixed import KernelConfig
    from dc_kernels.fixed.layout import DEFAULT_SLICE_ROWS

    r = DEFAULT_SLICE_ROWS
    # gather None: tune what the dispatcher will run (its codebook lookup for these widths).
    plans = [(n, 1, r, t, w, None) for t in (1024, 2048, 512, 4096) for w in (4, 8) for n in SWEEP_LAYERS]
    plans += [(n, 16, r, t, w, None) for t in (128, 256, 64) for w in (4, 8) for n in SWEEP_LAYERS]
    rows = run_plans(run, timer, device, layers, plans, "tune", reserve_s=115)
    for batch in (1, 16):
        best = best_config(rows, batch)
        if best is None:
            continue
        old = DISPATCH.spmm[batch]
        tuned = {**DISPATCH.spmm, batch: KernelConfig(best["tile_entries"], best["num_warps"])}
        DISPATCH = dataclasses.replace(DISPATCH, spmm=tuned)
        run.log(
            f"tuned batch {batch}: tile_entries={best['tile_entries']} num_warps={best['num_warps']} "
            f"(was {old.tile_entries}/{old.num_warps}); total {best['total_us']:.1f} us over {SWEEP_LAYERS}"
        )
    return rows


def sweep(run, timer, device, layers) -> list[dict]:
    """The codebook lookup (tl.gather vs the L1-resident table) at the tuned table, then slice
    rows (a layout parameter) around it."""
    from dc_kernels.fixed.layout import DEFAULT_SLICE_ROWS

    lookup_plans = [
        (n, batch, DEFAULT_SLICE_ROWS, cfg.tile_entries, cfg.num_warps, gather)
        for batch, cfg in ((b, DISPATCH.spmm[b]) for b in (1, 16))
        for gather in (True, False)
        for n in SWEEP_LAYERS
    ]
    lookup = run_plans(run, timer, device, layers, lookup_plans, "lookup", reserve_s=8)
    plans = []
    for batch in (1, 16):
        cfg = DISPATCH.spmm[batch]
        for slice_rows in (2, 8, 1, 16):
            for scale in (1, 2):
                for n in SWEEP_LAYERS:
                    plans.append((n, batch, slice_rows, cfg.tile_entries * scale, cfg.num_warps, None))
    rows = run_plans(run, timer, device, layers, plans, "sweep", reserve_s=8)
    for batch in (1, 16):
        at_batch = [r for r in lookup if r["batch"] == batch]
        us = {g: [r["cold_us"] for r in at_batch if r["gather"] is g] for g in (True, False)}
        if all(len(v) == len(SWEEP_LAYERS) for v in us.values()):
            run.log(
                f"codebook lookup at batch {batch}, 4-bit codes, total over {SWEEP_LAYERS}: "
                f"tl.gather {sum(us[True]):.1f} us, L1 table {sum(us[False]):.1f} us"
            )
        best = best_config(rows, batch)
        if best:
            run.log(f"sweep best at batch {batch}: {best}")
    return lookup + rows


def print_table(run: Run, rows: list[dict]) -> None:
    run.log("")
    run.log(
        f"{'layer':<20} {'bits':>5} {'MB':>6} {'B':>3} {'ours us':>8} {'warm':>7} {'GB/s':>7} {'%copy':>6} "
        f"{'x fp16':>7} {'x bf16':>7} {'x fp32':>7} {'x csr':>7} {'x fp16 warm':>11}"
    )
    for r in rows:
        speedups = " ".join(f"{r[f'speedup_{k}']:>7.1f}" for k in BASELINES)
        run.log(
            f"{r['layer']:<20} {r['code_bits']:>2}+{r['index_bits']:<2} {r['layout_bytes'] / 1e6:>6.2f} "
            f"{r['batch']:>3} {r['ours_cold_us']:>8.1f} {r['ours_warm_us']:>7.1f} "
            f"{r['ours_cold_gbps']:>7.0f} {100 * r['share_copy_bw']:>5.0f}% {speedups} "
            f"{r['speedup_cublas_fp16_warm']:>11.1f}"
        )


def check_targets(run: Run, rows: list[dict]) -> None:
    """The issue's targets (H200, cold): print each with PASS/FAIL."""

    def pick(layer, bits, batch):
        return next(
            (r for r in rows if r["layer"] == layer and r["code_bits"] == bits and r["batch"] == batch), None
        )

    checks = []
    for layer, want in (("vgg6", 10.0), ("alex7", 4.0)):
        r = pick(layer, 4, 1)
        if r:
            checks.append((f"{layer} batch 1: >= {want}x vs cuBLAS fp16", r["speedup_cublas_fp16"], want))
    for r in rows:
        if r["batch"] == 1 and r["layout_bytes"] > 8e6:
            checks.append(
                (f"{r['layer']} {r['code_bits']}-bit batch 1: >= 60% copy BW", r["share_copy_bw"], 0.6)
            )
    for layer in ("alex6", "alex7"):
        r = pick(layer, 4, 16)
        if r:
            checks.append((f"{layer} batch 16: >= 2x vs cuBLAS fp16", r["speedup_cublas_fp16"], 2.0))
    run.log("")
    for label, value, want in checks:
        run.log(f"target {'PASS' if value >= want else 'FAIL'}: {label} (measured {value:.2f})")


def guarded(run: Run, phase: str, fn, fallback, *args):
    """Run a later phase; an exception is logged and the benchmark goes on with the next one."""
    try:
        return fn(*args)
    except Exception:
        run.log(f"{phase} phase failed:\n{traceback.format_exc()[-3000:]}")
        return fallback


def environment(device: torch.device) -> dict:
    import triton

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = os.environ.get("DCOMP_COMMIT", "unknown")
    return {
        "gpu": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu-interpreter-{platform.machine()}",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "commit": commit,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output directory (default perf/results/<gpu>_<date>/)")
    parser.add_argument("--budget", type=float, default=230.0, help="seconds for the whole run")
    parser.add_argument("--small", action="store_true", help="dry run on CPU under TRITON_INTERPRET=1")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--sanitize-case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sanitize_case:
        return sanitize_case()
    if args.small:
        os.environ["TRITON_INTERPRET"] = "1"
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA device; use --small for a CPU dry run", file=sys.stderr)
        return 2

    # Build the random layers on CPU worker processes while the GPU works.
    global BATCHES
    if args.small:
        BATCHES = (1, 2, 16, 64)
    # "spawn": forking a process that has imported torch (threads) can deadlock.
    pool = ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=mp.get_context("spawn"))
    futures = [pool.submit(build_layer, *job) for job in layer_jobs(args.small)]

    device = torch.device("cpu" if args.small else "cuda")
    env = environment(device)
    date = env["date"][:16].replace(":", "").replace("-", "")
    out_dir = (
        Path(args.out)
        if args.out
        else ROOT / "perf" / "results" / f"{re.sub(r'[^A-Za-z0-9]+', '-', env['gpu'])}_{date}"
    )
    run = Run(out_dir, args.budget)
    run.log(f"bench_gpu: {json.dumps(env)}; output {out_dir}")
    (out_dir / "env.json").write_text(json.dumps(env, indent=1))

    timer = Timer(device, cold_runs=3 if args.small else 25)
    t0 = time.perf_counter()
    copy_gbps = copy_bandwidth(timer, device)
    env_row = {k: env[k] for k in ("gpu", "torch", "triton", "commit", "date")}
    run.log(f"copy bandwidth: {copy_gbps:.0f} GB/s ({time.perf_counter() - t0:.1f}s)")

    t0 = time.perf_counter()
    correctness = check_correctness(run, device, args.small)
    run.write_csv("correctness.csv", correctness)
    run.log(f"correctness phase: {time.perf_counter() - t0:.1f}s")
    sanitizer = "skipped (cpu)"
    if not args.small:
        sanitizer = guarded(run, "sanitizer", run_sanitizer, "error", run, min(45.0, run.left() - 170))

    from dc_kernels.fixed.layout import GpuLayout

    t0 = time.perf_counter()
    layers = []
    for fut in futures:
        res = fut.result()
        shape, codebook, row_ptr, col_idx, codes, bits = res["matrix"]
        matrix = CompressedMatrix(shape, codebook, row_ptr, col_idx, codes, bits)
        tensors = {k: torch.from_numpy(v).to(device) for k, v in res["tensors"].items()}
        layers.append(
            {"name": res["name"], "matrix": matrix, "layout": GpuLayout.from_state(tensors, res["meta"])}
        )
    pool.shutdown()
    order = {name: i for i, name in enumerate([*PAPER_LAYERS, *LLM_LAYERS])}
    layers.sort(key=lambda it: (order[it["name"]], it["layout"].code_bits))
    run.log(f"layers ready ({len(layers)}; waited {time.perf_counter() - t0:.1f}s)")

    t0 = time.perf_counter()
    tune_rows = guarded(run, "tune", tune, [], run, timer, device, layers) if run.left() > 140 else []
    run.log(f"tune phase: {time.perf_counter() - t0:.1f}s")

    t0 = time.perf_counter()
    rows = time_layers(run, timer, device, layers, copy_gbps, env_row)
    run.log(f"timing phase: {time.perf_counter() - t0:.1f}s")
    print_table(run, rows)
    check_targets(run, rows)

    t0 = time.perf_counter()
    cross_rows, recommended = guarded(
        run, "crossover", measure_crossover, ([], None), run, timer, device, layers
    )
    run.write_csv("crossover.csv", cross_rows)
    run.log(
        f"crossover phase: {time.perf_counter() - t0:.1f}s; measured DENSE_CROSSOVER_BATCH = {recommended} "
        f"(dispatcher uses {DISPATCH.dense_crossover_batch})"
    )

    t0 = time.perf_counter()
    sweep_rows = guarded(run, "sweep", sweep, [], run, timer, device, layers) if run.left() > 15 else []
    run.write_csv("sweep.csv", tune_rows + sweep_rows)
    run.log(f"sweep phase: {time.perf_counter() - t0:.1f}s")

    env.update(copy_gbps=copy_gbps, sanitizer=sanitizer, gather=DISPATCH.gather,
               correctness_pass=sum(r["ok"] for r in correctness), correctness_cases=len(correctness),
               measured_crossover=recommended,
               spmm_configs={bb: vars(c) for bb, c in DISPATCH.spmm.items()})  # fmt: skip
    (out_dir / "env.json").write_text(json.dumps(env, indent=1))
    failed = [r for r in correctness if not r["ok"]]
    run.log(f"done in {time.perf_counter() - run.start:.0f}s; results in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
