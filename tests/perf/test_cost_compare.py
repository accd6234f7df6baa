"""Measured GPU results beside the committed predictions (`python -m perf.cost.compare`)."""

import pytest

from perf.cost import compare as compare_module
from perf.cost.compare import compare, machine_for_gpu, predicted_batch1
from perf.cost.predict import load_predictions
from perf.gpu_results import read_gpu_results
from tests.perf.gpu_fixtures import huffman_time, kernel_times, write_huffman_csv, write_kernel_csv
from tests.perf.report_checks import read_csv


def test_machine_for_gpu():
    assert machine_for_gpu("NVIDIA H100 80GB HBM3") == "h100-sxm"
    assert machine_for_gpu("NVIDIA H200") == "h200"
    assert machine_for_gpu("NVIDIA A100-SXM4-80GB") is None


def test_committed_predictions_cover_the_paper_and_llm_layers():
    from perf.cost.predict import prediction_layers

    predictions = load_predictions()
    assert (
        predictions is not None
        and predictions.info["label"] == "predicted from the compiled code, not measured"
    )
    for machine in ("h100-sxm", "h200"):
        batch1 = predicted_batch1(predictions, machine)
        assert set(batch1) == set(prediction_layers())
        assert all(v["fixed"] > 0 and v["huffman"] > 0 and v["dense"] > 0 for v in batch1.values())
    assert {r["batch"] for r in predictions.rows} == {1, 16}


def test_compare_rows_and_cli(tmp_path, capsys):
    folder = tmp_path / "NVIDIA-H100_20261128T2300"
    write_kernel_csv(folder, ["nt-lstm", "alex7"], "NVIDIA H100 80GB HBM3", "2026-11-28T23:00:00Z")
    write_huffman_csv(folder, ["nt-lstm", "alex7"], "NVIDIA H100 80GB HBM3", "2026-11-28T23:04:00Z")
    measured = read_gpu_results(folder)
    predicted = predicted_batch1(load_predictions(), "h100-sxm")
    rows = {r["layer"]: r for r in compare(measured, load_predictions(), "h100-sxm")}
    for i, layer in enumerate(["nt-lstm", "alex7"]):
        row = rows[layer]
        assert row["fixed_measured_us"] == kernel_times(i, 5)["ours"]
        assert row["fixed_ratio"] == pytest.approx(kernel_times(i, 5)["ours"] / predicted[layer]["fixed"])
        assert row["huffman_ratio"] == pytest.approx(huffman_time(i) / predicted[layer]["huffman"])
        assert row["dense_predicted_us"] == predicted[layer]["dense"]
    assert compare_module.main(["--measured", str(folder)]) == 0
    assert "measured/predicted" in capsys.readouterr().out
    written = {r["layer"]: r for r in read_csv(folder / compare_module.CSV_NAME)}
    assert float(written["alex7"]["fixed_ratio"]) == pytest.approx(rows["alex7"]["fixed_ratio"])
    assert written["alex7"]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert (
        "predicted from the compiled code, not measured"
        in (folder / compare_module.MARKDOWN_NAME).read_text()
    )


def test_compare_refuses_what_it_cannot_compare(tmp_path, capsys):
    assert compare_module.main(["--measured", str(tmp_path / "empty")]) == 2
    assert "no GPU rows" in capsys.readouterr().err
    folder = tmp_path / "a100"
    write_kernel_csv(folder, ["nt-lstm"], "NVIDIA A100-SXM4-80GB", "2026-11-28T23:00:00Z")
    assert compare_module.main(["--measured", str(folder)]) == 2
    assert "no machine figures for 'NVIDIA A100" in capsys.readouterr().err
    h100 = tmp_path / "h100"
    write_kernel_csv(h100, ["nt-lstm"], "NVIDIA H100", "2026-11-28T23:00:00Z")
    assert compare_module.main(["--measured", str(h100), "--predictions", str(tmp_path / "none.json")]) == 2
    assert "none.json not found" in capsys.readouterr().err
