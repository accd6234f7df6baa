"""Synthetic GPU results folders in the format `perf/bench_gpu.py` and `perf/bench_gpu_huffman.py`
write (their row keys, their CSV writer), with known times the tests can check."""

from __future__ import annotations

import json
from pathlib import Path

from perf.harness import write_csv

BASELINES = ("cublas_fp16", "cublas_bf16", "cublas_fp32", "cusparse_fp32")


def kernel_times(index: int, code_bits: int) -> dict[str, float]:
    """Batch-1 cold times (us) of layer number ``index``: ours 10+i (5-bit) or 90+i (4-bit),
    cuBLAS fp16 200+i."""
    ours = (10.0 if code_bits == 5 else 90.0) + index
    return {"ours": ours, "cublas_fp16": 200.0 + index, "cublas_bf16": 201.0, "cublas_fp32": 400.0 + index}


def huffman_time(index: int) -> float:
    return 13.0 + index


def env(gpu: str, date: str) -> dict[str, str]:
    return {"gpu": gpu, "torch": "2.11.0", "triton": "3.6.0", "commit": "abc123", "date": date}


def write_kernel_csv(folder: Path, layers: list[str], gpu: str, date: str) -> Path:
    """``results.csv`` as `bench_gpu.time_one_layer` builds its rows and `GpuRun.save` writes them
    (with the provenance columns)."""
    rows = []
    for i, name in enumerate(layers):
        for code_bits in (4, 5):
            for batch in (1, 16):
                t = kernel_times(i, code_bits)
                scale = 1 if batch == 1 else 3
                row = {
                    "layer": name,
                    "out": 100,
                    "in": 200,
                    "density": 0.1,
                    "nnz": 2000,
                    "code_bits": code_bits,
                    "index_bits": code_bits,
                    "block_rows": 32,
                    "chunks": 8,
                    "layout_bytes": 5000,
                    "bits_per_weight": 9.5,
                    "batch": batch,
                    "path": "spmm",
                    "copy_gbps": 4000.0,
                }
                row["ours_cold_us"] = t["ours"] * scale
                row["ours_warm_us"] = t["ours"] / 2
                for base in BASELINES:
                    row[f"{base}_cold_us"] = t.get(base, 300.0) * scale
                row["cublas_fp16_warm_us"] = 50.0
                row["ours_cold_gbps"] = 500.0
                row["share_copy_bw"] = 0.12
                for base in BASELINES:
                    row[f"speedup_{base}"] = row[f"{base}_cold_us"] / row["ours_cold_us"]
                row["speedup_cublas_fp16_warm"] = 2.0
                rows.append(row)
    path = write_csv(folder / "results.csv", rows, env(gpu, date))
    (folder / "env.json").write_text(json.dumps({**env(gpu, date), "copy_gbps": 4000.0}))
    return path


def write_huffman_csv(folder: Path, layers: list[str], gpu: str, date: str, bits: int = 5) -> Path:
    """``huffman_gpu.csv`` as `bench_gpu_huffman.bench_layer` builds its rows and `GpuRun.save` writes
    them with `perf.harness.gpu_run_info` columns; layout variants time only the Huffman kernel."""
    rows = []
    for i, name in enumerate(layers):
        for variant, full in (("default", True), ("pieces16", False)):
            base = {
                "layer": name,
                "bits": bits,
                "density": 0.1,
                "nnz": 2000,
                "symbols": 2010,
                "variant": variant,
                "pieces": 4,
                "lanes": 128,
                "huffman_bits_per_weight": 8.1,
            }
            rows.append({**base, "kernel": "huffman_decode", "batch": 0, "us_warm": 3.0, "gsym_per_s": 60.0})
            if full:
                base.update(fixed_bits_per_weight=9.5, bits_ratio=0.85)
            for batch in (1, 8):
                kernels = {"huffman": huffman_time(i) * (1 if full else 7)}
                if full:
                    kernels.update(fixed=11.0 + i, cublas_fp16=210.0 + i)
                for kernel, us in kernels.items():
                    rows.append(
                        {
                            **base,
                            "kernel": kernel,
                            "batch": batch,
                            "us_warm": us / 2,
                            "us_cold": us * (1 if batch == 1 else 2),
                            "correct": True,
                        }
                    )
    info = {
        "date": date,
        "commit": "abc123",
        "python": "3.12.0",
        "torch": "2.11.0",
        "numpy": "2.1.0",
        "cpu": "Intel Xeon",
        "cpu_threads": "16",
        "device": "cuda",
        "triton": "3.6.0",
        "gpu": gpu,
    }
    return write_csv(folder / "huffman_gpu.csv", rows, info)
