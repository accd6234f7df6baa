"""The Huffman GPU benchmark's logic, run on the CPU through Triton's interpreter with the shared
timer's CPU path (its timings mean nothing there)."""

import csv

import numpy as np
import torch

from perf import bench_gpu_huffman
from perf.gpu_run import GpuRun
from workloads import LayerSpec, random_compressed_matrix


def cpu_run(tmp_path) -> GpuRun:
    return GpuRun.open(tmp_path, "cpu", log_name="log.txt", cold_runs=1)


def test_check_case_passes_and_catches_a_wrong_layer(monkeypatch, tmp_path):
    run = cpu_run(tmp_path)
    matrix = random_compressed_matrix(9, 30, 0.3, 3, seed=int(np.random.SeedSequence().generate_state(1)[0]))
    assert bench_gpu_huffman.check_case(run, "small", matrix, batches=(1, 5), dtypes=(torch.float32,))
    # A layout of another layer must be caught (decoder and GEMV both compared).
    other = random_compressed_matrix(9, 30, 0.3, 3, seed=1 + int(matrix.codes.sum()))
    real_from_matrix = bench_gpu_huffman.HuffmanLayout.from_matrix
    monkeypatch.setattr(
        bench_gpu_huffman.HuffmanLayout, "from_matrix", lambda m, **kw: real_from_matrix(other, **kw)
    )
    assert not bench_gpu_huffman.check_case(run, "wrong", matrix, batches=(1,), dtypes=(torch.float32,))
    assert "FAIL" in (tmp_path / "log.txt").read_text()


def test_bench_layer_logic_on_a_small_layer(tmp_path):
    run = cpu_run(tmp_path)
    small = LayerSpec("vgg6", 96, 24, 0.1)
    rows = []
    bench_gpu_huffman.bench_layer(run, small, 4, rows, bench_gpu_huffman.DEFAULT, full=True)
    bench_gpu_huffman.bench_layer(run, small, 4, rows, "table10", full=False)
    kernels = {(r["kernel"], r["batch"]) for r in rows}
    assert ("huffman_decode", 0) in kernels and ("fixed", 8) in kernels and ("cublas_fp16", 1) in kernels
    assert {r["variant"] for r in rows} == {"default", "table10"}
    assert all(r["symbols"] >= r["nnz"] and 0 < r["lane_utilization"] <= 1 for r in rows)
    assert all("gsym_per_s" in r for r in rows if r["kernel"].startswith("huffman"))
    assert all(r["us_warm"] > 0 for r in rows) and all(r["us_cold"] > 0 for r in rows if r["batch"])
    assert all(r.get("correct", True) for r in rows) and "FAIL" not in (tmp_path / "log.txt").read_text()
    summary = bench_gpu_huffman.summarize(rows, ok=True)
    assert "G symbols/s (goal >= 50.0)" in summary[0]
    assert "VGG-6 batch 1 cold" in summary[1] and "of fixed" in summary[1]
    assert summary[-1] == "correctness: ok"
    assert bench_gpu_huffman.summarize(rows, ok=False)[-1] == "correctness: FAILED"


def test_a_layout_is_checked_again_after_its_timed_launches(monkeypatch, tmp_path):
    """The check after the timings compares the timed layout's output with the reference: a wrong
    result there marks the Huffman rows and the verdict, not the other kernels'."""
    matrix = random_compressed_matrix(24, 96, 0.1, 4, seed=3)
    layout = bench_gpu_huffman.HuffmanLayout.from_matrix(matrix)
    weight = torch.from_numpy(matrix.to_dense())
    x, bias = torch.randn(2, 96), torch.randn(24)
    assert bench_gpu_huffman._still_correct(layout, x, bias, weight)
    assert not bench_gpu_huffman._still_correct(layout, x, bias, 2 * weight)
    monkeypatch.setattr(bench_gpu_huffman, "_still_correct", lambda *args: False)
    run, rows, small = cpu_run(tmp_path), [], LayerSpec("small", 96, 24, 0.1)
    bench_gpu_huffman.bench_layer(run, small, 4, rows, bench_gpu_huffman.DEFAULT, full=True)
    assert {r["kernel"] for r in rows if r.get("correct") is False} == {"huffman"}
    assert "wrong after the timed launches" in (tmp_path / "log.txt").read_text()
    assert bench_gpu_huffman.summarize(rows, ok=True)[-1] == "correctness: FAILED"


def test_main_dry_run_writes_csv_and_log(tmp_path, monkeypatch):
    """``--small`` end to end on one small layer (the edge cases are the test above's)."""
    monkeypatch.setattr(bench_gpu_huffman, "correctness", lambda run, small: True)
    code = bench_gpu_huffman.main(["--small", "--layers", "nt-lstm", "--out", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / bench_gpu_huffman.CSV_NAME).open()))
    assert {r["kernel"] for r in rows} == {"huffman_decode", "huffman", "fixed", "cublas_fp16"}
    assert all(r["gpu"].startswith("cpu-interpreter") and r["flush_bytes"] == "0" for r in rows)
    log = (tmp_path / bench_gpu_huffman.LOG_NAME).read_text()
    assert "nt-lstm 5-bit" in log and "correctness: ok" in log
