"""The GPU benchmark's phases on CPU under the interpreter (tiny sizes): the script itself is
checked here; its timings mean nothing off the GPU."""

import torch

from dc_kernels import GpuLayout
from perf import bench_gpu
from workloads import random_compressed_matrix


def test_correctness_phase_passes_on_cpu(tmp_path):
    run = bench_gpu.Run(tmp_path, budget_s=600)
    rows = bench_gpu.check_correctness(run, torch.device("cpu"), small=True)
    assert rows and all(r["ok"] for r in rows)
    assert {r["dtype"] for r in rows} == {"float32", "float16", "bfloat16"}


def test_timing_table_targets_and_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_gpu, "BATCHES", (1, 16))
    matrix = random_compressed_matrix(12, 40, 0.1, 4, seed=0)
    layers = [{"name": "alex7", "matrix": matrix, "layout": GpuLayout.from_matrix(matrix, index_bits=4)}]
    run = bench_gpu.Run(tmp_path, budget_s=600)
    timer = bench_gpu.Timer(torch.device("cpu"), cold_runs=1)
    rows = bench_gpu.time_layers(run, timer, torch.device("cpu"), layers, 10.0, {"gpu": "cpu"})
    assert [r["batch"] for r in rows] == [1, 16]
    for r in rows:
        assert r["ours_cold_us"] > 0 and r["speedup_cublas_fp16"] > 0 and r["layout_bytes"] > 0
    bench_gpu.print_table(run, rows)
    bench_gpu.check_targets(run, rows)
    assert (tmp_path / "results.csv").read_text().count("\n") == 3
    log = (tmp_path / "log.txt").read_text()
    assert "target" in log and "alex7" in log


def test_layer_jobs_cover_paper_and_llm_layers():
    jobs = bench_gpu.layer_jobs(small=True)
    names = {j[0] for j in jobs}
    assert {"vgg6", "alex7", "llm-14336x4096-d30"} <= names
    assert len(jobs) == 9 * len(bench_gpu.PAPER_CONFIGS) + 6 * len(bench_gpu.LLM_CONFIGS)
