"""The GPU benchmark's phases on CPU under the interpreter (tiny sizes): the script itself is
checked here; its timings mean nothing off the GPU."""

import csv

from dc_kernels import GpuLayout
from dc_kernels.fixed import KernelConfig
from dc_kernels.fixed.launch import DEFAULT_DISPATCH, Dispatch
from perf import bench_gpu
from perf.gpu_run import GpuRun
from perf.harness import DRY_RUN_GPU_PREFIX
from workloads import random_compressed_matrix


def cpu_run(tmp_path) -> GpuRun:
    return GpuRun.open(tmp_path, "cpu", log_name="log.txt", budget_s=600, cold_runs=1)


def test_correctness_phase_passes_on_cpu(tmp_path):
    rows, dispatch = bench_gpu.check_correctness(cpu_run(tmp_path), True, DEFAULT_DISPATCH)
    assert rows and all(r["ok"] for r in rows)
    assert {r["dtype"] for r in rows} == {"float32", "float16", "bfloat16"}
    # The dispatch is returned (switched to global loads only where tl.gather fails), never changed in place.
    assert dispatch.spmm == DEFAULT_DISPATCH.spmm and dispatch.gather in (None, False)
    assert DEFAULT_DISPATCH.gather is None


def test_timing_table_targets_and_csv(tmp_path):
    matrix = random_compressed_matrix(12, 40, 0.1, 5, seed=0)  # the targets are on the 5-bit layers
    layers = [{"name": "alex7", "matrix": matrix, "layout": GpuLayout.from_matrix(matrix)}]
    run = cpu_run(tmp_path)
    rows = bench_gpu.time_layers(run, layers, 10.0, DEFAULT_DISPATCH, batches=(1, 16))
    assert [r["batch"] for r in rows] == [1, 16]
    for r in rows:
        assert r["ours_cold_us"] > 0 and r["speedup_cublas_fp16"] > 0 and r["layout_bytes"] > 0
    bench_gpu.log_results_table(run.progress, rows)
    bench_gpu.check_targets(run.progress, rows)
    written = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(written) == 2
    # Every row carries the run's provenance and the timer's settings.
    assert all(r["gpu"].startswith(DRY_RUN_GPU_PREFIX) and r["cold_runs"] == "1" for r in written)
    log = (tmp_path / "log.txt").read_text()
    assert "target" in log and "alex7" in log and "x fp16 warm" in log


def test_tune_returns_the_winners_in_a_new_dispatch(tmp_path, monkeypatch):
    """The tuned table is a value handed to the later phases; the library default stays as it is."""
    winners = {1: KernelConfig(2), 16: KernelConfig(4)}

    def fake_plans(run, layers, plans, phase, reserve_s, dispatch):
        assert dispatch is DEFAULT_DISPATCH
        rows = []
        for name, batch, _shape, lanes, gather in plans:
            fast = winners[batch] == KernelConfig(lanes)
            rows.append({"phase": phase, "layer": name, "batch": batch, "shape": "default",
                         "lanes_per_thread": lanes, "gather": gather,
                         "cold_us": 1.0 if fast else 5.0})  # fmt: skip
        return rows

    monkeypatch.setattr(bench_gpu, "run_plans", fake_plans)
    rows, tuned = bench_gpu.tune(cpu_run(tmp_path), [], DEFAULT_DISPATCH)
    assert rows and tuned.spmm[1] == winners[1] and tuned.spmm[16] == winners[16]
    assert tuned.spmm[4] == DEFAULT_DISPATCH.spmm[4]
    assert DEFAULT_DISPATCH.spmm[1] != winners[1] and DEFAULT_DISPATCH.spmm[16] != winners[16]
    assert "tuned batch 1: lanes_per_thread=2" in (tmp_path / "log.txt").read_text()


def test_run_plans_times_variants_of_the_given_dispatch(tmp_path):
    """The tune and sweep phases' launches: each plan a variant of the dispatch handed in, on the
    layer's own layout or one built with the plan's shape (tiny, CPU)."""
    layers = []
    for name in bench_gpu.SWEEP_LAYERS:
        matrix = random_compressed_matrix(8, 40, 0.2, 4, seed=1)
        layout = GpuLayout.from_matrix(matrix, index_bits=4, block_rows=8)
        layers.append({"name": name, "matrix": matrix, "layout": layout})
    given = Dispatch(spmm={**DEFAULT_DISPATCH.spmm, 1: KernelConfig(2)})
    plans = [(name, 1, shape, 2, None) for name in bench_gpu.SWEEP_LAYERS for shape in (None, (8, 4, 10))]
    rows = bench_gpu.run_plans(cpu_run(tmp_path), layers, plans, "sweep", 0, given)
    assert [(r["layer"], r["shape"], r["lanes_per_thread"]) for r in rows] == [
        (name, shape, 2) for name in bench_gpu.SWEEP_LAYERS for shape in ("default", "R8xT4 lead 10")
    ]
    assert all(r["cold_us"] > 0 and r["gather"] is False for r in rows)  # 4-bit codes: the table
    assert [(r["block_rows"], r["chunks"]) for r in rows[:2]] == [
        (layers[0]["layout"].block_rows, layers[0]["layout"].chunks),
        (8, 4),
    ]


def test_sweep_builds_the_layout_variants(tmp_path):
    matrix = random_compressed_matrix(16, 80, 0.2, 4, seed=2)
    layout = GpuLayout.from_matrix(matrix, index_bits=4, block_rows=16, chunks=2)
    layers = [{"name": "alex7", "matrix": matrix, "layout": layout}]
    rows = bench_gpu.sweep(cpu_run(tmp_path), layers, DEFAULT_DISPATCH)
    assert {r["phase"] for r in rows} == {"lookup", "sweep"}
    assert {r["gather"] for r in rows if r["phase"] == "lookup"} == {True, False}
    assert {(r["block_rows"], r["chunks"]) for r in rows if r["phase"] == "sweep"} == {
        (16, 1),
        (16, 4),
        (8, 2),
        (16, 2),
    }


def test_layer_jobs_cover_paper_and_llm_layers():
    jobs = bench_gpu.layer_jobs(small=True)
    names = {j[0] for j in jobs}
    assert {"vgg6", "alex7", "llm-14336x4096-d30"} <= names
    assert len(jobs) == 9 * len(bench_gpu.PAPER_CONFIGS) + 6 * len(bench_gpu.LLM_CONFIGS)
    assert all(j[1] < 1000 and j[2] < 1000 for j in jobs)  # scaled down for the interpreter
