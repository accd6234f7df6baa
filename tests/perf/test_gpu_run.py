import csv

import pytest

from perf.gpu_run import DRY_RUN_SCALE, GpuRun, default_out_dir, dry_run_spec
from perf.harness import REPO_ROOT
from workloads import PAPER_LAYERS, LayerSpec


def test_run_writes_provenance_into_every_csv_and_logs_to_its_folder(tmp_path):
    run = GpuRun.open(tmp_path / "out", "cpu", log_name="bench.log", budget_s=60, cold_runs=2)
    run.progress("hello")
    path = run.save("rows.csv", [{"layer": "alex7", "us": 1.5}, {"layer": "vgg6", "us": 2.5}])
    rows = list(csv.DictReader(path.open()))
    assert [r["layer"] for r in rows] == ["alex7", "vgg6"]
    assert all(r["gpu"] == run.info["gpu"] and r["cold_runs"] == "2" and r["commit"] for r in rows)
    assert "hello" in (tmp_path / "out" / "bench.log").read_text()
    assert 0 < run.progress.left() <= 60 and run.timer.cold_runs == 2


def test_default_out_dir_names_gpu_and_minute():
    folder = default_out_dir({"gpu": "NVIDIA H200 (MIG 1g)", "date": "2026-11-28T23:04:59Z"})
    assert folder == REPO_ROOT / "perf" / "results" / "NVIDIA-H200-MIG-1g-_20261128T2304"


def test_dry_run_spec_scales_the_sides_and_keeps_the_densities():
    vgg6 = PAPER_LAYERS["vgg6"]
    small = dry_run_spec(vgg6)
    assert (small.inputs, small.outputs) == (vgg6.inputs // DRY_RUN_SCALE, vgg6.outputs // DRY_RUN_SCALE)
    assert (small.name, small.weight_density, small.activation_density) == (
        vgg6.name,
        vgg6.weight_density,
        vgg6.activation_density,
    )
    tiny = dry_run_spec(LayerSpec("t", 10, 10, 0.5))
    assert (tiny.inputs, tiny.outputs) == (3, 2)


def test_open_refuses_a_bad_budget(tmp_path):
    with pytest.raises(ValueError, match="budget_s"):
        GpuRun.open(tmp_path, "cpu", log_name="x.log", budget_s=-1)
