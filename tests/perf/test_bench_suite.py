"""The EIE and pipeline benchmarks at reduced size: CSVs with numbers and provenance."""

import pytest

from perf import bench_eie, bench_pipeline
from perf.bench_eie import EieBenchConfig
from perf.bench_pipeline import STAGES, PipelineBenchConfig
from tests.perf.report_checks import positive, read_csv


def test_bench_eie_small(tmp_path):
    assert bench_eie.main(["--quick", "--layers", "nt-lstm", "--sweeps", "fifo", "--out", str(tmp_path)]) == 0
    (row,) = read_csv(tmp_path / "eie_layers.csv")
    assert row["layer"] == "nt-lstm" and row["pes"] == "64" and row["commit"]
    for column in ("cycles", "time_us", "energy_uj", "sim_seconds", "sim_entries_per_s"):
        assert positive(row[column]), column
    assert 0 < float(row["load_efficiency"]) <= 1
    sweep = read_csv(tmp_path / "eie_sweep_fifo.csv")
    assert [int(r["value"]) for r in sweep] == [1, 2, 4, 8, 32]
    assert float(sweep[0]["speedup"]) == 1.0 and float(sweep[-1]["speedup"]) >= 1.0
    assert not (tmp_path / "eie_sweep_pes.csv").exists()


def test_workload_comparison_reuses_the_layers_simulated():
    """The rows of `simulate_layers` stand in for their workload in `compare_workloads`: the same
    figures as simulating it again, and every other workload simulated."""
    config = EieBenchConfig.quick(layers=("nt-we",))
    simulated = bench_eie.simulate_layers(config)
    reused = bench_eie.compare_workloads(config, simulated=simulated)
    fresh = bench_eie.compare_workloads(config)
    assert reused == fresh
    assert sorted(r["workload"] for r in reused) == sorted(bench_eie.WORKLOADS)
    (mine,) = [r for r in reused if r["workload"] == config.workload]
    assert mine["cycles"] == simulated[0]["cycles"] and set(mine) == set(fresh[0])


def test_bench_pipeline_small(tmp_path):
    assert bench_pipeline.main(["--quick", "--layers", "nt-lstm", "--out", str(tmp_path)]) == 0
    rows = read_csv(tmp_path / "bench_pipeline.csv")
    assert [r["stage"] for r in rows] == list(STAGES)
    assert all(positive(r["mweights_per_s"]) and r["layer"] == "nt-lstm" for r in rows)
    assert int(rows[0]["items"]) == 1201 * 2400 and int(rows[1]["items"]) == round(0.10 * 1201 * 2400)


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="unknown layers"):
        EieBenchConfig(layers=("alex9",))
    with pytest.raises(ValueError, match="unknown sweeps"):
        EieBenchConfig(sweeps=("voltage",))
    with pytest.raises(KeyError, match="unknown layer"):
        PipelineBenchConfig(layers=("alex9",))
    with pytest.raises(ValueError, match="repeat"):
        PipelineBenchConfig(repeat=0)
