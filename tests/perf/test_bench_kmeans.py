import csv

from compress import kmeans
from perf.bench_kmeans import main


def test_bench_kmeans_runs_small(tmp_path, monkeypatch, capsys):
    # Small enough layers take the histogram path, so that both paths are compared.
    monkeypatch.setattr(kmeans, "_EXACT_MAX", 4096)
    argv = ["--sizes", "3e4", "--bits", "3", "--textbook-size", "5e3", "--compare-size", "2e4"]
    assert main([*argv, "--no-layer", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_kmeans.csv").open()))
    assert [r["case"] for r in rows] == [
        "20 iterations vs textbook O(nk) Lloyd",
        "to convergence vs sorted exact path",
        "to convergence",
    ]
    assert all(float(r["seconds"]) > 0 and r["load_avg_1min"] for r in rows)
    assert float(rows[1]["inertia_ratio"]) <= 1.001  # the histogram path fits at least as well
    assert rows[2]["converged"] == "True"
    assert "wrote" in capsys.readouterr().out
