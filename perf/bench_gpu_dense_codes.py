"""GPU benchmark of the dense-codes form (`dc_kernels.dense_codes`).

Correctness first (fresh random inputs, outputs poisoned with NaN): odd shapes, every code width
1..8, float32/float16/bfloat16, strided x, every batch bucket and the decode + cuBLAS path. Then,
on the shapes and densities of ``python -m perf.bench_cpu --forms`` (MiniLM and LLM projections
at density 0.5 and 0.8, 4-bit codes):

* the dense-codes form as dispatched at batch 1, 4 and 16 (the GEMV kernel at batch 1, decode +
  cuBLAS from `Dispatch.dense_crossover_batch`) and, at 4 and 16, its tile kernel forced
  (``path="codes"``, kernel ``dense_codes_tiles``: the measured crossover), against cuBLAS
  float16 on the dense layer and the sparse fixed-width kernel (`dc_kernels.fixed`; skipped on
  layers above `FIXED_MAX_KEPT` kept weights, whose layout takes the host tens of seconds to
  build), warm (CUDA graph of many calls, L2 warm) and cold (L2 flushed before every call), with
  the timer the other GPU benchmarks use (`perf.gpu_timing`);
* the decoder alone (codes to a float16 weight; GB/s of codes read);
* GPU-resident bytes of each form beside the float16 weight's.

Writes ``dense_codes_gpu.csv`` (each row with the run's provenance columns,
`perf.harness.gpu_run_info`, and the timer's settings) and ``dense_codes_gpu.log`` to ``--out``
(default ``perf/results/<gpu>_<date>/``). Budget: about a minute including compilation; shapes
left when it is spent are skipped (the LLM up projection last: its host-side layouts are the
slowest to build). ``--small`` runs it on CPU under ``TRITON_INTERPRET=1`` with the shapes scaled
down (a dry run of the script; its timings mean nothing).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from compress import CompressedMatrix
from dc_kernels.dense_codes.launch import decode_dense, dense_codes_linear
from dc_kernels.dense_codes.layout import DenseCodesLayout
from dc_kernels.reference import CanonicalTensors, reference_linear
from perf.bench_cpu import FORM_BITS, FORM_DENSITIES, FORM_SHAPES
from perf.gpu_run import DRY_RUN_SCALE, GpuRun, add_run_arguments, matches_reference
from perf.harness import doc_summary, format_table
from workloads import random_compressed_matrix

CSV_NAME = "dense_codes_gpu.csv"
LOG_NAME = "dense_codes_gpu.log"
BATCHES = (1, 4, 16)
# Above this many kept weights the fixed-width layout is not built (host time, not GPU time).
FIXED_MAX_KEPT = 1 << 24
# LLM shapes at batch 1 first (the form's case), the up projection last (slowest to build).
SHAPE_ORDER = ("llm-attn", "minilm-attn", "minilm-up", "minilm-down", "llm-up")


def check_case(
    run: GpuRun, name: str, matrix: CompressedMatrix, batches=(1, 3, 16, 17), dtypes=None, strided=False
) -> bool:
    """The layer at each batch and dtype, as dispatched and (batches above 1) by the tile kernel
    forced, outputs poisoned with NaN, against the float64 reference; and the decoder against the
    dense weight; True when all pass."""
    device = run.device
    layout = DenseCodesLayout.from_matrix(matrix, device=device)
    canonical = CanonicalTensors.from_matrix(matrix, device)
    gen = torch.Generator(device=device).manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
    ok = True
    expected_weight = torch.from_numpy(matrix.to_dense()).to(device)
    if not torch.equal(decode_dense(layout, torch.float32), expected_weight):
        run.progress(f"FAIL decoder {name}")
        ok = False
    for dtype in dtypes or (torch.float32, torch.float16, torch.bfloat16):
        for batch in batches:
            n = matrix.shape[1]
            x = torch.randn(batch, 2 * n if strided else n, device=device, generator=gen).to(dtype)
            x = x[:, ::2] if strided else x
            bias = torch.randn(matrix.shape[0], device=device, generator=gen)
            expected = reference_linear(x, canonical, bias, torch.float64)
            for path in (None, "codes") if batch > 1 else (None,):
                out = torch.full((batch, matrix.shape[0]), float("nan"), dtype=dtype, device=device)
                dense_codes_linear(x, layout, bias, out=out, path=path)
                good, err = matches_reference(out, expected)
                if not good:
                    run.progress(f"FAIL {name} batch={batch} {dtype} path={path}: max abs error {err:.3g}")
                    ok = False
    return ok


def correctness(run: GpuRun, small: bool = False) -> bool:
    """Edge cases in fresh random draws; True when all pass. ``small`` (the interpreter's dry run,
    whose kernel tests sweep every width and batch bucket) shrinks the large and the long cases
    and takes fewer batches and code widths."""
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    big, long = ((70, 900), 40) if small else ((1000, 4099), 300)
    batches = (1, 2, 17) if small else (1, 2, 3, 5, 9, 16, 17, 64)
    ok = check_case(run, "7x13", random_compressed_matrix(7, 13, 0.3, 4, seed=seed), batches=batches)
    for bits in (1, 5, 8) if small else range(1, 9):
        matrix = random_compressed_matrix(33, 70 + bits, 0.6, bits, seed=seed + bits)
        ok &= check_case(run, f"33x{70 + bits} {bits}-bit", matrix, batches=(1, 16), dtypes=(torch.float16,))
    cases = {
        "1x1": random_compressed_matrix(1, 1, 1.0, 1, seed=seed),
        f"{long}x1": random_compressed_matrix(long, 1, 0.5, 3, seed=seed),
        f"1x{long}": random_compressed_matrix(1, long, 0.5, 3, seed=seed),
        "empty": random_compressed_matrix(9, 40, 1e-9, 4, seed=seed),
        f"{big[0]}x{big[1]}": random_compressed_matrix(*big, 0.5, 4, seed=seed, codebook_size=15),
    }
    for name, matrix in cases.items():
        ok &= check_case(run, name, matrix, batches=(1, 8), dtypes=(torch.bfloat16,), strided=True)
    run.progress(f"correctness on edge cases: {'ok' if ok else 'FAILED'}")
    return ok


def bench_shape(run: GpuRun, name: str, inputs: int, outputs: int, density: float, rows: list[dict]) -> None:
    """Times of the dense-codes form, cuBLAS float16 and (up to `FIXED_MAX_KEPT`) the fixed-width
    form on a random layer of the shape; appends the rows to ``rows``."""
    from dc_kernels.fixed import GpuLayout, fixed_linear

    device, timer = run.device, run.timer
    # 2**bits - 1 shared values: the dense-codes form keeps one code for zero.
    matrix = random_compressed_matrix(
        outputs, inputs, density, FORM_BITS, seed=1, codebook_size=(1 << FORM_BITS) - 1
    )
    codes = DenseCodesLayout.from_matrix(matrix, device=device)
    fixed = GpuLayout.from_matrix(matrix, device=device) if matrix.nnz <= FIXED_MAX_KEPT else None
    dense = torch.from_numpy(matrix.to_dense()).to(device=device, dtype=torch.float16)
    bias = torch.randn(outputs, device=device)
    fp16_bytes = 2 * outputs * inputs
    base = {
        "shape": name,
        "out_features": outputs,
        "in_features": inputs,
        "density": density,
        "bits": FORM_BITS,
        "dense_codes_bytes": codes.total_bytes(),
        "fixed_bytes": fixed.total_bytes() if fixed is not None else "",
        "fp16_bytes": fp16_bytes,
    }
    decode = timer.cold(lambda: decode_dense(codes, torch.float16)).median_us
    gb_per_s = round(codes.planes.numel() / decode / 1e3, 1)
    decoder = {"kernel": "dense_codes_decode", "batch": 0, "us_cold": round(decode, 2), "gb_per_s": gb_per_s}
    rows.append({**base, **decoder})
    share = codes.total_bytes() / fp16_bytes
    msg = f"{name} d{density}: codes {share:.3f} of fp16 bytes, decoder {decode:.1f} us"
    for batch in BATCHES:
        x = torch.randn(batch, inputs, device=device, dtype=torch.float16)
        kernels = {
            "dense_codes": lambda x=x: dense_codes_linear(x, codes, bias),
            "cublas_fp16": lambda x=x: torch.nn.functional.linear(x, dense, bias.half()),
        }
        if batch > 1:
            kernels["dense_codes_tiles"] = lambda x=x: dense_codes_linear(x, codes, bias, path="codes")
        if fixed is not None:
            kernels["fixed"] = lambda x=x: fixed_linear(x, fixed, bias)
        times = run.warm_and_cold(f"{name} B={batch}", kernels)
        cublas = times["cublas_fp16"][1]
        for kernel, (warm, cold) in times.items():
            timing = {"us_warm": round(warm, 2), "us_cold": round(cold, 2)}
            rows.append({**base, "kernel": kernel, "batch": batch, **timing,
                         "speedup_vs_cublas_cold": round(cublas / cold, 3)})  # fmt: skip
        msg += f" | B={batch} codes {times['dense_codes'][1]:.1f} us cold = "
        msg += f"{times['cublas_fp16'][1] / times['dense_codes'][1]:.2f}x cuBLAS fp16"
    run.progress(msg)


def summarize(rows: list[dict], ok: bool) -> list[str]:
    """Per shape and density, the dense-codes form against cuBLAS float16 (cold) at batch 1 and 16
    and its bytes; the last line is the correctness verdict."""
    lines = []
    for row in rows:
        if row["kernel"] == "dense_codes" and row["batch"] in BATCHES:
            lines.append(
                f"{row['shape']} density {row['density']} batch {row['batch']}: dense codes "
                f"{row['speedup_vs_cublas_cold']}x cuBLAS fp16 (cold), "
                f"{row['dense_codes_bytes'] / row['fp16_bytes']:.3f} of its bytes"
            )
    lines.append(f"correctness: {'ok' if ok else 'FAILED'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    add_run_arguments(parser, 50.0, "seconds; later shapes are skipped")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPE_ORDER), choices=list(FORM_SHAPES))
    args = parser.parse_args(argv)
    title = "dense-codes GPU benchmark"
    run = GpuRun.from_args(args, log_name=LOG_NAME, script="bench_gpu_dense_codes", title=title)
    if run is None:
        return 2
    ok = correctness(run, args.small)
    rows: list[dict] = []
    plan = [(name, density) for name in args.shapes for density in FORM_DENSITIES]
    for i, (name, density) in enumerate(plan):
        if run.progress.left() < 0:
            run.progress(
                f"time budget of {args.budget:.0f} s spent: skipping the last {len(plan) - i} of {len(plan)}"
            )
            break
        inputs, outputs = FORM_SHAPES[name]
        if args.small:
            inputs, outputs = max(inputs // DRY_RUN_SCALE, 3), max(outputs // DRY_RUN_SCALE, 2)
        bench_shape(run, name, inputs, outputs, density, rows)
        run.save(CSV_NAME, rows)  # after every shape: a timeout keeps the rest
    columns = ["shape", "density", "batch", "kernel", "us_warm", "us_cold", "speedup_vs_cublas_cold"]
    table = format_table([r for r in rows if r["batch"]], columns)
    return run.finish(table, summarize(rows, ok), CSV_NAME, LOG_NAME)


if __name__ == "__main__":
    sys.exit(main())
