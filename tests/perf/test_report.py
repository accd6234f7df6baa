"""`dcomp run --quick` and `dcomp report` at reduced size: the report's files, tables and plots
exist and hold numbers; GPU results are shown when a results folder exists and absent otherwise."""

from pathlib import Path

import pytest

from perf import main_job, report
from perf.gpu_results import read_gpu_results
from perf.reporting.collect import ReportConfig
from tests.eie_dump import DUMP, needs_dump
from tests.perf.gpu_fixtures import huffman_time, kernel_times, write_huffman_csv, write_kernel_csv
from tests.perf.report_checks import check_png, markdown_tables, number, numeric_body, positive, read_csv

LAYERS = ["nt-we", "nt-lstm"]
PLOTS = [
    "speedup",
    "energy_efficiency",
    "compression_waterfall",
    "eie_fifo",
    "eie_pes",
    "eie_sram_width",
    "eie_index_bits",
]
CSVS = [
    "report_layers",
    "cpu",
    "eie_layers",
    "eie_workloads",
    "compression",
    "eie_sweep_fifo",
    "eie_sweep_pes",
    "eie_sweep_sram-width",
    "eie_sweep_index-bits",
    "pipeline",
]


@pytest.fixture(scope="module")
def run_report(tmp_path_factory):
    """The main job at reduced size, on a machine without a GPU and no committed GPU results."""
    root = tmp_path_factory.mktemp("run")
    (root / "results").mkdir()
    argv = ["--quick", "--layers", *LAYERS, "--out", str(root / "out"), "--threads", "1", "--no-gpu"]
    assert main_job.main([*argv, "--results-root", str(root / "results")]) == 0
    return root / "out" / "report"


def test_files(run_report):
    for name in ["report.md", "report.html", "digits_cpu.csv", "digits_eie.csv"]:
        assert (run_report / name).stat().st_size > 0
    for name in CSVS:
        assert len(read_csv(run_report / f"{name}.csv")) > 0, name
    assert (run_report.parent / "demo" / "demo.json").is_file()


def test_markdown_tables_hold_numbers(run_report):
    tables = markdown_tables((run_report / "report.md").read_text())
    time = tables["Time per layer, batch 1 (us)"]
    assert time[0] == ["layer", "CPU dense", "CPU compressed", "EIE (model)"]  # no GPU columns
    assert [row[0] for row in time[1:]] == LAYERS
    for title in [
        "Time per layer, batch 1 (us)",
        "Energy per layer, batch 1 (uJ)",
        "EIE per layer (cycle-level model)",
    ]:
        assert all(v is not None and v >= 0 for row in numeric_body(tables[title]) for v in row), title
    for title in ["Speedup over CPU dense, batch 1 (x)", "Energy efficiency over CPU dense (x)"]:
        body = numeric_body(tables[title])
        assert tables[title][-1][0] == "geo. mean" and all(v > 0 for row in body for v in row)
    compression = tables["Compression (x = dense float32 size / size)"]
    header, total = compression[0], compression[-1]
    assert total[0] == "total"
    rates = [number(total[header.index(c)]) for c in ("pruned x", "quantized x", "Huffman x")]
    assert 1 < rates[0] < rates[1] < rates[2]
    assert [row[0] for row in tables["Load efficiency vs FIFO depth"][1:]] == ["1", "2", "4", "8", "32"]
    efficiency = [row[0] for row in numeric_body(tables["Load efficiency vs FIFO depth"])]
    assert efficiency == sorted(efficiency) and efficiency[0] > 0 and efficiency[-1] <= 1
    useful = [row[0] for row in numeric_body(tables["Useful efficiency vs FIFO depth"])]
    assert useful == sorted(useful) and all(u <= e for u, e in zip(useful, efficiency))
    speedup = [row[0] for row in numeric_body(tables["Speedup vs number of PEs (over the fewest PEs)"])]
    assert speedup[0] == 1 and speedup[-1] > 10
    assert all(0 < v <= 1 for row in numeric_body(tables["Useful efficiency vs number of PEs"]) for v in row)
    for title in ["Energy per layer vs SRAM line width (uJ)", "Energy per layer vs z width (uJ)"]:
        assert all(v > 0 for row in numeric_body(tables[title]) for v in row), title
    workloads = tables["EIE per layer by workload"]
    assert "time us (uniform)" in workloads[0] and "useful eff (fc8-stats)" in workloads[0]
    assert [row[0] for row in workloads[1:]] == LAYERS
    assert all(v > 0 for row in numeric_body(workloads) for v in row)
    eie = tables["EIE per layer (cycle-level model)"]
    assert "useful efficiency" in eie[0] and "uJ at chip power" in eie[0]
    assert "`fc8-stats` workload" in (run_report / "report.md").read_text()
    assert all(v > 0 for row in numeric_body(tables["Pipeline throughput (M weights/s)"]) for v in row)
    digits = tables["Digits network: batch 1 on CPU and EIE (real activations)"]
    assert [row[0] for row in digits[1:]] == ["fc1", "fc2", "fc3"]
    assert all(v > 0 for row in numeric_body(digits) for v in row)
    sizes = numeric_body(tables["Digits network: sizes after Deep Compression (dcomp demo)"])
    assert sizes[-1][-1] > 10  # P+Q+H of the whole trained network


def test_no_gpu_results_are_reported_as_such(run_report):
    text = (run_report / "report.md").read_text()
    assert "No GPU results" in text and "GPU dense" not in text
    assert "No GPU results" in (run_report / "report.html").read_text()
    rows = read_csv(run_report / "report_layers.csv")
    assert not [c for c in rows[0] if c.startswith(("gpu_", "speedup_gpu", "energy_gpu"))]


def test_layer_csv(run_report):
    rows = read_csv(run_report / "report_layers.csv")
    assert [r["layer"] for r in rows] == LAYERS
    for row in rows:
        for column in [
            "cpu_dense_us",
            "cpu_compressed_us",
            "eie_us",
            "speedup_eie",
            "energy_eie_uj",
            "efficiency_eie",
        ]:
            assert positive(row[column]), column
        assert 1 < float(row["rate_pruned"]) < float(row["rate_pq"]) < float(row["rate_pqh"])
        assert float(row["speedup_cpu_compressed"]) == pytest.approx(
            float(row["cpu_dense_us"]) / float(row["cpu_compressed_us"])
        )
        assert row["commit"] and row["date"] and row["cpu"] and float(row["load_avg_1min"]) >= 0
        assert row["cpu_power_kind"] in ("measured", "estimate")


def test_plots_and_self_contained_html(run_report):
    for name in PLOTS:
        check_png(run_report / f"{name}.png")
    html = (run_report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert 'src="http' not in html and '.png"' not in html
    assert html.count("<table>") == (run_report / "report.md").read_text().count("\n### ")


def quick_report_argv(out, layer: str) -> list[str]:
    """A one-layer, one-thread quick report into ``out`` without sweeps."""
    return ["--quick", "--layers", layer, "--out", str(out), "--threads", "1", "--no-sweeps"]


@needs_dump
def test_report_shows_the_dump_as_its_own_row(tmp_path):
    out = tmp_path / "report"
    argv = [*quick_report_argv(out, "nt-lstm"), "--no-plots"]
    assert (
        report.main([*argv, "--pipeline-layers", "--eie-dump", str(DUMP), "--eie-workload", "uniform"]) == 0
    )
    text = (out / "report.md").read_text()
    eie = markdown_tables(text)["EIE per layer (cycle-level model)"]
    assert [row[0] for row in eie[1:]] == ["nt-lstm", "dump:eie_alexnet_fc8 (real data)"]
    assert number(eie[2][eie[0].index("cycles")]) == 7897
    assert "authors' real AlexNet fc8 layer and image: 7,897 cycles" in text
    assert "`uniform` workload" in text
    rows = read_csv(out / "eie_layers.csv")
    assert rows[-1]["workload"] == "authors' dump" and rows[0]["workload"] == "uniform"


def test_a_missing_dump_in_the_environment_only_drops_its_row(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EIE_DUMP", str(tmp_path / "missing"))
    out = tmp_path / "report"
    argv = [*quick_report_argv(out, "nt-we"), "--no-plots"]
    assert report.main([*argv, "--pipeline-layers"]) == 0
    assert "is not a folder" in capsys.readouterr().err
    text = (out / "report.md").read_text()
    assert "real data" not in text and "fc8 dump: not given" in text
    with pytest.raises(SystemExit):  # named on the command line, a missing folder is an error
        report.main([*argv, "--eie-dump", str(tmp_path / "missing")])


def test_report_shows_committed_gpu_results(tmp_path):
    folder = tmp_path / "results" / "NVIDIA-H200_20261128T2300"
    write_kernel_csv(folder, ["nt-lstm"], "NVIDIA H200", "2026-11-28T23:00:00Z")
    write_huffman_csv(folder, ["nt-lstm"], "NVIDIA H200", "2026-11-28T23:04:00Z")
    out = tmp_path / "report"
    argv = quick_report_argv(out, "nt-lstm")
    assert report.main([*argv, "--pipeline-layers", "--results-root", str(tmp_path / "results")]) == 0
    text = (out / "report.md").read_text()
    assert "NVIDIA H200" in text and "700 W (estimate" in text and "No GPU results" not in text
    time = markdown_tables(text)["Time per layer, batch 1 (us)"]
    assert time[0][3:6] == ["GPU dense (cuBLAS fp16)", "GPU fixed-width", "GPU Huffman"]
    expected = kernel_times(0, 5)
    assert numeric_body(time)[0][2:5] == [expected["cublas_fp16"], expected["ours"], huffman_time(0)]
    (row,) = read_csv(out / "report_layers.csv")
    assert float(row["speedup_gpu_fixed"]) == pytest.approx(float(row["cpu_dense_us"]) / expected["ours"])
    assert float(row["energy_gpu_fixed_uj"]) == pytest.approx(expected["ours"] * 700.0)
    assert row["gpu"] == "NVIDIA H200"
    check_png(out / "speedup.png")


def test_measure_gpu_uses_the_huffman_benchmark_output(tmp_path, monkeypatch):
    """`dcomp run` on a GPU machine: the benchmark's folder becomes the report's GPU source; a
    failing benchmark leaves the committed results in charge."""
    from perf import bench_gpu_huffman

    def fake_benchmark(argv):
        out = argv[argv.index("--out") + 1]
        layers = argv[argv.index("--layers") + 1 :]
        write_huffman_csv(Path(out), layers, "NVIDIA H200", "2026-11-28T23:04:00Z")
        return 0

    monkeypatch.setattr(bench_gpu_huffman, "main", fake_benchmark)
    messages = []
    folder = main_job.measure_gpu(tmp_path / "gpu", ("nt-lstm",), messages.append)
    assert folder == tmp_path / "gpu" and messages == []
    assert read_gpu_results(folder).layers["nt-lstm"].huffman_us == huffman_time(0)

    def failing_benchmark(argv):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(bench_gpu_huffman, "main", failing_benchmark)
    assert main_job.measure_gpu(tmp_path / "gpu2", ("nt-lstm",), messages.append) is None
    assert "out of memory" in messages[0]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layers": ("llm-4096x4096-d10",)}, "paper layers"),
        ({"layers": ()}, "paper layers"),
        ({"bits": 9}, "bits"),
        ({"cpu_watts": -1.0}, "cpu_watts"),
        ({"gpu_watts": float("nan")}, "gpu_watts"),
        ({"threads": 0}, "threads"),
        ({"eie_workload": "real"}, "unknown workload"),
        ({"eie_dump": Path("/nonexistent/eie_dump")}, "does not exist"),
    ],
)
def test_report_config_rejects_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        ReportConfig(**fields)


def test_report_sets_gpu_predictions_apart(run_report):
    text = (run_report / "report.md").read_text()
    title = "GPU, predicted from the compiled code, not measured, batch 1 (us)"
    table = markdown_tables(text)[title]
    assert table[0][:4] == ["layer", "cuBLAS fp16, predicted", "fixed-width, predicted", "Huffman, predicted"]
    assert not [c for c in table[0] if "measured /" in c]  # no GPU results: predictions only
    assert [row[0] for row in table[1:]] == LAYERS
    assert all(number(c) > 0 for row in table[1:] for c in row[1:4])
    assert "## GPU, predicted from the compiled code (not measured)" in text
    assert "predicted from the compiled code, not measured, batch 1 on the NVIDIA H100" in text  # summary
    assert {r["layer"] for r in read_csv(run_report / "gpu_predicted.csv")} == set(LAYERS)


def test_report_sets_measured_beside_predicted(tmp_path):
    from perf.cost.predict import load_predictions

    folder = tmp_path / "results" / "NVIDIA-H100_20261128T2300"
    write_kernel_csv(folder, ["nt-lstm"], "NVIDIA H100 80GB HBM3", "2026-11-28T23:00:00Z")
    out = tmp_path / "report"
    argv = quick_report_argv(out, "nt-lstm")
    assert report.main([*argv, "--pipeline-layers", "--results-root", str(tmp_path / "results")]) == 0
    table = markdown_tables((out / "report.md").read_text())[
        "GPU, predicted from the compiled code, not measured, batch 1 (us)"
    ]
    header, row = table
    predicted = {
        r["form"]: r
        for r in load_predictions().rows
        if (r["layer"], r["batch"], r["machine"]) == ("nt-lstm", 1, "h100-sxm")  # named like the GPU
    }
    ratio = number(row[header.index("fixed-width, measured / predicted")])
    assert ratio == pytest.approx(kernel_times(0, 5)["ours"] / predicted["fixed"]["predicted_us"], rel=5e-3)
    dense = number(row[header.index("cuBLAS fp16, measured / predicted")])
    assert dense == pytest.approx(
        kernel_times(0, 5)["cublas_fp16"] / predicted["fixed"]["cublas_fp16_us"], rel=5e-3
    )


def test_report_without_gpu_predictions(tmp_path):
    out = tmp_path / "report"
    argv = [*quick_report_argv(out, "nt-lstm"), "--no-plots"]
    missing = ["--gpu-predictions", str(tmp_path / "none.json"), "--results-root", str(tmp_path)]
    assert report.main([*argv, "--pipeline-layers", *missing]) == 0
    text = (out / "report.md").read_text()
    assert "No GPU predictions: run `dcomp predict-gpu`" in text
    assert "GPU, predicted from the compiled code, not measured, batch 1 (us)" not in text


def test_report_shows_the_committed_whole_model_results(run_report):
    """perf/results/model/bench_model.csv (python -m perf.bench_model) is read, not measured."""
    from perf.reporting.collect import read_model_results
    from perf.reporting.tables import model_table

    rows = read_model_results(ReportConfig().model_results)
    assert rows and {r["model"] for r in rows} == {"dense", "sparse", "dense_codes", "auto"}
    table = model_table(rows)
    assert len(table.frame) == len(rows) and "not measured by this run" in table.note
    assert "## Whole model (CPU)" in (run_report / "report.md").read_text()
    assert read_model_results(None) == [] and read_model_results(Path("missing.csv")) == []
