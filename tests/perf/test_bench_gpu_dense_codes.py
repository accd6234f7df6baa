"""The dense-codes GPU benchmark's logic, run on the CPU through Triton's interpreter with the
shared timer's CPU path (its timings mean nothing there)."""

import csv

import numpy as np
import pytest
import torch

from perf import bench_gpu_dense_codes
from perf.gpu_run import GpuRun, matches_reference
from workloads import random_compressed_matrix


def cpu_run(tmp_path) -> GpuRun:
    return GpuRun.open(tmp_path, "cpu", log_name="log.txt", cold_runs=1)


def fresh_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def test_matches_reference_catches_nan_and_errors():
    expected = torch.randn(3, 5, dtype=torch.float64)
    good, err = matches_reference(expected.half(), expected)
    assert good and 0 <= err < 2e-3 * (1 + float(expected.abs().max()))
    poisoned = expected.float().clone()
    poisoned[1, 2] = float("nan")
    assert matches_reference(poisoned, expected) == (False, float("inf"))
    good, err = matches_reference((expected + 0.5).float(), expected)
    assert not good and abs(err - 0.5) < 1e-6


def test_check_case_passes_and_catches_a_wrong_layer(monkeypatch, tmp_path):
    run = cpu_run(tmp_path)
    matrix = random_compressed_matrix(9, 30, 0.6, 3, seed=fresh_seed())
    assert bench_gpu_dense_codes.check_case(run, "small", matrix, batches=(1, 5), dtypes=(torch.float32,))
    assert bench_gpu_dense_codes.check_case(run, "strided", matrix, batches=(3,), strided=True)
    # A layout of another layer must be caught (decoder and GEMV both compared).
    other = random_compressed_matrix(9, 30, 0.6, 3, seed=1 + int(matrix.codes.sum()))
    real_from_matrix = bench_gpu_dense_codes.DenseCodesLayout.from_matrix
    monkeypatch.setattr(
        bench_gpu_dense_codes.DenseCodesLayout, "from_matrix", lambda m, **kw: real_from_matrix(other, **kw)
    )
    assert not bench_gpu_dense_codes.check_case(run, "wrong", matrix, batches=(1,), dtypes=(torch.float32,))
    log = (tmp_path / "log.txt").read_text()
    assert "FAIL decoder wrong" in log and "FAIL wrong batch=1" in log
    # Both paths of a batch above 1 are checked.
    assert not bench_gpu_dense_codes.check_case(run, "wrong", matrix, batches=(3,), dtypes=(torch.float32,))
    log = (tmp_path / "log.txt").read_text()
    assert (
        "FAIL wrong batch=3 torch.float32 path=None" in log
        and "FAIL wrong batch=3 torch.float32 path=codes" in log
    )


def test_bench_shape_rows_and_summary(tmp_path):
    run = cpu_run(tmp_path)
    rows = []
    bench_gpu_dense_codes.bench_shape(run, "minilm-up", 6, 24, 0.5, rows)
    kernels = {(r["kernel"], r["batch"]) for r in rows}
    assert kernels == {("dense_codes_decode", 0), ("dense_codes", 1), ("cublas_fp16", 1), ("fixed", 1)} | {
        (kernel, batch)
        for batch in (4, 16)
        for kernel in ("dense_codes", "dense_codes_tiles", "cublas_fp16", "fixed")
    }
    codes = next(r for r in rows if r["kernel"] == "dense_codes")
    # 4-bit codes of 24 x 6 weights (rows padded to whole code words) plus the codebook.
    assert 0 < codes["dense_codes_bytes"] < 2 * codes["fp16_bytes"] and codes["fp16_bytes"] == 2 * 24 * 6
    for row in (r for r in rows if r["batch"]):
        cublas = next(r for r in rows if r["kernel"] == "cublas_fp16" and r["batch"] == row["batch"])
        ratio = cublas["us_cold"] / row["us_cold"]
        assert row["us_cold"] > 0
        assert row["speedup_vs_cublas_cold"] == pytest.approx(ratio, rel=1e-2, abs=1e-3)
    summary = bench_gpu_dense_codes.summarize(rows, ok=True)
    assert summary[0].startswith("minilm-up density 0.5 batch 1: dense codes")
    assert summary[-1] == "correctness: ok"
    assert bench_gpu_dense_codes.summarize(rows, ok=False)[-1] == "correctness: FAILED"


def test_main_dry_run_writes_csv_and_log(tmp_path, monkeypatch):
    """``--small`` end to end on one shape (the edge cases are the tests above's)."""
    monkeypatch.setattr(bench_gpu_dense_codes, "correctness", lambda run, small: True)
    code = bench_gpu_dense_codes.main(["--small", "--shapes", "minilm-attn", "--out", str(tmp_path)])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / bench_gpu_dense_codes.CSV_NAME).open()))
    assert {r["density"] for r in rows} == {"0.5", "0.8"}
    assert {r["kernel"] for r in rows} == {
        "dense_codes_decode",
        "dense_codes",
        "dense_codes_tiles",
        "cublas_fp16",
        "fixed",
    }
    assert all(r["gpu"].startswith("cpu-interpreter") and r["flush_bytes"] == "0" for r in rows)
    log = (tmp_path / bench_gpu_dense_codes.LOG_NAME).read_text()
    assert "minilm-attn d0.5" in log and "correctness: ok" in log


def test_correctness_dry_run(tmp_path):
    """Every edge case of the GPU run, scaled down, passes under the interpreter."""
    run = cpu_run(tmp_path)
    assert bench_gpu_dense_codes.correctness(run, small=True)
    assert "correctness on edge cases: ok" in (tmp_path / "log.txt").read_text()
