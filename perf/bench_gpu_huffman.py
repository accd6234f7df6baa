"""GPU benchmark of the Huffman GPU form (`dc_kernels.huffman`).

Correctness first (fresh random inputs, outputs poisoned with NaN, odd shapes and edge cases,
then the paper's layers), then on the paper's nine FC layers (random, at their densities):

* decoder throughput: symbols (kept weights and escapes) decoded per second, G symbols/s, beside
  the goal of 50 G symbols/s; the fused GEMV's symbols per second too;
* the fused Huffman GEMV against the fixed-width kernel (`dc_kernels.fixed.launch`) and cuBLAS
  float16 on the dense layer, batch 1 and 8, warm (CUDA graph of many calls, L2 warm) and cold
  (L2 flushed before every call), with the timer `perf/bench_gpu.py` uses (`perf.gpu_timing`);
* layout variants on VGG-6 and Alex-7: shorter and longer pieces (``segment_symbols`` 16 and 128:
  decode chains vs piece bits) and the least-memory decode table (``max_table_bits`` 10).

Writes ``huffman_gpu.csv`` (each row with the run's provenance columns, `perf.harness.gpu_run_info`,
and the timer's settings) and ``huffman_gpu.log`` to ``--out`` (default
``perf/results/<gpu>_<date>/``) and prints progress. Budget: about 2 minutes on an H200 including
compilation. Run: ``python -m perf.bench_gpu_huffman --out DIR``; ``--small`` runs it on CPU under
``TRITON_INTERPRET=1`` with layers scaled down (a dry run of the script, its timings mean nothing).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from compress import CompressedMatrix
from dc_kernels.fixed.layout import GpuLayout
from dc_kernels.huffman.launch import huffman_decode, huffman_linear, launch_config, steps_granularity
from dc_kernels.huffman.layout import MAX_TABLE_BITS, HuffmanLayout
from dc_kernels.reference import CanonicalTensors, decode_dense
from perf.gpu_run import TOLERANCES, GpuRun, add_run_arguments, dry_run_spec, matches_reference
from perf.harness import doc_summary, format_table
from workloads import PAPER_LAYERS, LayerSpec, random_compressed_matrix

TARGETS = {"decoder_gsym_s": 50.0, "vs_fixed": 1.3, "vs_cublas_vgg6_b1": 5.0}
VARIANT_LAYERS = ("vgg6", "alex7")
DEFAULT = "default"  # the layout `HuffmanLayout.from_matrix` makes without arguments
VARIANTS = {"pieces16": {"segment_symbols": 16}, "pieces128": {"segment_symbols": 128}}
VARIANTS["table10"] = {"max_table_bits": MAX_TABLE_BITS}
CSV_NAME = "huffman_gpu.csv"
LOG_NAME = "huffman_gpu.log"


def check_case(run: GpuRun, name: str, matrix: CompressedMatrix, batches=(1, 3, 8), dtypes=None) -> bool:
    """Fused GEMV (poisoned outputs) and decoder against the references; True when all pass."""
    device = run.device
    layout = HuffmanLayout.from_matrix(matrix, device=device)
    ok = True
    codes, cols = huffman_decode(layout)
    if not (
        np.array_equal(codes.cpu().numpy(), matrix.codes)
        and np.array_equal(cols.cpu().numpy(), matrix.col_idx)
    ):
        run.progress(f"FAIL decoder {name}")
        ok = False
    gen = torch.Generator(device=device).manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
    weight = decode_dense(CanonicalTensors.from_matrix(matrix, device)).double()
    for dtype in dtypes or TOLERANCES:
        for batch in batches:
            x = torch.randn(batch, matrix.shape[1], device=device, generator=gen).to(dtype)
            bias = torch.randn(matrix.shape[0], device=device, generator=gen)
            out = torch.full((batch, matrix.shape[0]), float("nan"), dtype=dtype, device=device)
            huffman_linear(x, layout, bias, out=out)
            good, err = matches_reference(out, x.double() @ weight.T + bias.double())
            if not good:
                run.progress(f"FAIL gemv {name} batch={batch} {dtype}: max abs error {err:.3g}")
                ok = False
    return ok


def correctness(run: GpuRun, small: bool = False) -> bool:
    """Edge cases (odd shapes, one symbol, empty rows, wide and dense layers) in fresh random
    draws; True when all pass. ``small`` shrinks the wide and the dense case (a dry run: the
    interpreter decodes a few thousand symbols a second)."""
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    (wide_out, wide_in, wide_density), (dense_out, dense_in) = (
        ((40, 700, 0.02), (16, 600)) if small else ((1000, 4097, 0.004), (64, 5000))
    )
    cases = {
        "7x13": random_compressed_matrix(7, 13, 0.3, 4, seed=seed),
        "1x1": random_compressed_matrix(1, 1, 1.0, 1, seed=seed),
        "300x1": random_compressed_matrix(300, 1, 0.5, 3, seed=seed),
        f"{wide_out}x{wide_in}": random_compressed_matrix(wide_out, wide_in, wide_density, 5, seed=seed),
        "one-symbol": random_compressed_matrix(9, 40, 1.0, 2, seed=seed, codebook_size=1),
        "dense-8bit": random_compressed_matrix(dense_out, dense_in, 1.0, 8, seed=seed),
    }
    empty_rows = random_compressed_matrix(40, 300, 0.2, 5, seed=seed + 1)
    row_ptr = empty_rows.row_ptr.copy()
    keep = np.repeat(np.arange(40) % 3 != 0, np.diff(row_ptr))
    row_ptr[1:] = np.cumsum(np.where(np.arange(40) % 3 != 0, np.diff(row_ptr), 0))
    cases["empty-rows"] = CompressedMatrix(
        (40, 300), empty_rows.codebook, row_ptr, empty_rows.col_idx[keep], empty_rows.codes[keep], 5
    )
    # Three dtypes and batches 1, 3, 8 on one case; float16 at batch 1 and 8 on the others
    # (every extra dtype or batch bucket is one more compilation).
    ok = check_case(run, "7x13", cases.pop("7x13"))
    for name, matrix in cases.items():
        ok &= check_case(run, name, matrix, batches=(1, 8), dtypes=(torch.float16,))
    run.progress(f"correctness on edge cases: {'ok' if ok else 'FAILED'}")
    return ok


def _still_correct(layout: HuffmanLayout, x: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor) -> bool:
    """One more fused GEMV of ``layout`` (poisoned output) against the float64 reference."""
    out = torch.full((x.shape[0], layout.out_features), float("nan"), dtype=x.dtype, device=x.device)
    huffman_linear(x, layout, bias, out=out)
    return matches_reference(out, x.double() @ weight.double().T + bias.double())[0]


def bench_layer(run: GpuRun, spec: LayerSpec, bits: int, rows: list[dict], variant: str, full: bool) -> None:
    """Decoder throughput and the fused GEMV's cold/warm times on a random layer of ``spec`` in the
    layout ``variant`` (`DEFAULT` or a key of `VARIANTS`; with ``full``: also the fixed-width
    kernel and cuBLAS float16, after a correctness check); appends the rows to ``rows``."""
    name, device, timer = spec.name, run.device, run.timer
    matrix = spec.random_matrix(bits, seed=0)
    huff = HuffmanLayout.from_matrix(matrix, **VARIANTS.get(variant, {}), device=device)
    symbols = huff.symbols()
    config = launch_config(huff, 1, torch.float16)
    base = {
        "layer": name,
        "bits": bits,
        "density": spec.weight_density,
        "nnz": matrix.nnz,
        "symbols": symbols,
        "variant": variant,
        "pieces": huff.pieces,
        "lanes": huff.lanes,
        "symbols_per_piece": round(symbols / huff.n_segments, 1),
        "coding": f"b{huff.gap_raw_bits} c{huff.code_raw_bits} Q{huff.q_levels} T{huff.table_bits}",
        "steps_per_iteration": config.K,
        "lane_utilization": round(huff.lane_utilization(steps_granularity(config.K)), 3),
        "huffman_bits_per_weight": round(huff.bits_per_kept_weight(), 3),
    }
    ok = check_case(run, name, matrix, batches=(1, 8), dtypes=(torch.float16,)) if full else True
    dec_us = timer.warm(lambda: huffman_decode(huff)).median_us
    row = {**base, "kernel": "huffman_decode", "batch": 0, "us_warm": round(dec_us, 2)}
    row["gsym_per_s"] = round(symbols / dec_us / 1e3, 1)
    rows.append(row)
    msg = (
        f"{name} {bits}-bit {variant}: decoder {dec_us:.1f} us = {row['gsym_per_s']} G symbols/s "
        f"(goal {TARGETS['decoder_gsym_s']:.0f})"
    )
    if full:
        from dc_kernels.fixed import fixed_linear

        fixed = GpuLayout.from_matrix(matrix, device=device)
        base["fixed_bits_per_weight"] = round(fixed.bits_per_kept_weight(), 3)
        base["bits_ratio"] = round(huff.bits_per_kept_weight() / fixed.bits_per_kept_weight(), 3)
        weight = decode_dense(CanonicalTensors.from_matrix(matrix, device))
        dense = weight.half()
    bias = torch.randn(spec.outputs, device=device)
    for batch in (1, 8):
        x = torch.randn(batch, spec.inputs, device=device, dtype=torch.float16)
        kernels = {"huffman": lambda x=x: huffman_linear(x, huff, bias)}
        if full:
            kernels["fixed"] = lambda x=x: fixed_linear(x, fixed, bias)
            kernels["cublas_fp16"] = lambda x=x: torch.nn.functional.linear(x, dense, bias.half())
        times = run.warm_and_cold(f"{name} B={batch}", kernels)
        # Checked again on the layout just timed: a slabbed layout's counts carry over between
        # launches (`dc_kernels.huffman.launch.slab_scratch`), which one launch does not test.
        after = _still_correct(huff, x, bias, weight) if full else True
        if not after:
            run.progress(f"FAIL {name} {variant} B={batch}: wrong after the timed launches of one layout")
        for k, (warm, cold) in times.items():
            correct = ok and (after or k != "huffman")
            timing = {"us_warm": round(warm, 2), "us_cold": round(cold, 2), "correct": correct}
            if k == "huffman":  # symbols decoded per second inside the fused GEMV
                timing["gsym_per_s"] = round(symbols / cold / 1e3, 1)
            rows.append({**base, "kernel": k, "batch": batch, **timing})
        hw, hc = times["huffman"]
        msg += f" | B={batch} huffman {hw:.1f}/{hc:.1f} us (warm/cold)"
        if full:
            msg += (
                f", x{hc / times['fixed'][1]:.2f} of fixed, "
                f"{times['cublas_fp16'][1] / hc:.1f}x faster than cuBLAS fp16 (cold)"
            )
    run.progress(msg)


def summarize(rows: list[dict], ok: bool) -> list[str]:
    """The lines that compare the results with the targets; the last one is the verdict."""
    main_rows = [r for r in rows if r["variant"] == DEFAULT]
    decoders = [r["gsym_per_s"] for r in main_rows if r["kernel"] == "huffman_decode"]
    fused = [r["gsym_per_s"] for r in main_rows if r["kernel"] == "huffman" and r["batch"] == 1]
    best = max(decoders, default=float("nan"))
    summary = [
        f"decoder best {best} G symbols/s (goal >= {TARGETS['decoder_gsym_s']}); fused GEMV at batch 1 "
        f"best {max(fused, default=float('nan'))} G symbols/s (cold)"
    ]
    vgg = {r["kernel"]: r for r in main_rows if r["layer"] == "vgg6" and r["batch"] == 1}
    if {"huffman", "fixed", "cublas_fp16"} <= vgg.keys():
        huff, fixed, cublas = (vgg[k]["us_cold"] for k in ("huffman", "fixed", "cublas_fp16"))
        summary.append(
            f"VGG-6 batch 1 cold: huffman {huff} us, x{huff / fixed:.2f} of fixed "
            f"(target <= {TARGETS['vs_fixed']}), {cublas / huff:.1f}x faster than cuBLAS fp16 "
            f"(target >= {TARGETS['vs_cublas_vgg6_b1']})"
        )
    good = ok and all(r.get("correct", True) for r in rows)
    summary.append(f"correctness: {'ok' if good else 'FAILED'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    add_run_arguments(parser, 90.0, "seconds; later layers are skipped")
    parser.add_argument(
        "--bits", type=int, nargs="+", default=[5], help="code widths (default 5, as DC's FC)"
    )
    parser.add_argument("--layers", nargs="+", default=list(PAPER_LAYERS), choices=list(PAPER_LAYERS))
    args = parser.parse_args(argv)
    run = GpuRun.from_args(args, log_name=LOG_NAME, script="bench_gpu_huffman", title="Huffman GPU benchmark")
    if run is None:
        return 2
    ok = correctness(run, args.small)
    rows: list[dict] = []
    # VGG-6 (the targets' layer) first, then the others, then the segment-size variants.
    layers = sorted(args.layers, key=lambda n: n != "vgg6")
    plan = [(name, bits, DEFAULT, True) for bits in args.bits for name in layers]
    plan += [
        (name, args.bits[0], variant, False)
        for name in VARIANT_LAYERS
        if name in args.layers
        for variant in VARIANTS
    ]
    for i, (name, bits, variant, full) in enumerate(plan):
        if run.progress.left() < 0:
            run.progress(
                f"time budget of {args.budget:.0f} s spent: skipping the last {len(plan) - i} of {len(plan)}"
            )
            break
        spec = dry_run_spec(PAPER_LAYERS[name]) if args.small else PAPER_LAYERS[name]
        bench_layer(run, spec, bits, rows, variant, full)
        run.save(CSV_NAME, rows)  # after every layer: a timeout keeps the rest
    table = [r for r in rows if r["variant"] == DEFAULT and "us_cold" in r]
    columns = [
        "layer",
        "bits",
        "batch",
        "kernel",
        "us_warm",
        "us_cold",
        "gsym_per_s",
        "huffman_bits_per_weight",
        "bits_ratio",
        "lane_utilization",
    ]
    return run.finish(format_table(table, columns), summarize(rows, ok), CSV_NAME, LOG_NAME)


if __name__ == "__main__":
    sys.exit(main())
