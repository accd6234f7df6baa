"""`dcomp demo` (`perf.demo`): options, the JSON result, the text report and the files it writes."""

import importlib.util
import json

import pytest

from perf import demo
from workloads.digits.demo import TARGET_RATE_PQ

pytest.importorskip("sklearn")


def test_demo_json_at_reduced_size(tmp_path, capsys):
    assert demo.main(["--seeds", "1", "--json", "--epochs-scale", "0.1", "--out", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in (
        "dense_accuracy",
        "compressed_accuracy",
        "compression_rate_pq",
        "compression_rate_pqh",
        "layers",
    ):
        assert key in result
    assert 80.0 < result["dense_accuracy"] <= 100.0
    assert 50.0 < result["compressed_accuracy"] <= 100.0
    # The sizes depend on the configuration only, not on training.
    assert result["compression_rate_pq"] > TARGET_RATE_PQ
    # Huffman coding of the code and index streams makes the file smaller still.
    assert result["compression_rate_pqh"] > result["compression_rate_pq"]
    assert "met_pqh" in result["target"]
    rows = {row["layer"]: row for row in result["layers"]}
    assert list(rows) == ["fc1", "fc2", "fc3", "total"]
    assert rows["fc2"]["weights"] == 30000 and rows["total"]["weights"] == 50200
    assert rows["total"]["dense_bytes"] / rows["total"]["bytes_pq"] == pytest.approx(
        result["compression_rate_pq"]
    )
    assert result["seeds"] == 1 and len(result["per_seed"]) == 1
    written = json.loads((tmp_path / "demo.json").read_text())
    assert written["compression_rate_pq"] == result["compression_rate_pq"]
    assert (tmp_path / "layers.csv").read_text().startswith("layer,")
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "weights_fc2.png").stat().st_size > 0


def test_demo_text_report(tmp_path, capsys):
    assert demo.main(["--seeds", "1", "--epochs-scale", "0.05", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "compression (P+Q, relative-index format)" in out.out
    assert "compression (P+Q+H, Huffman-coded streams" in out.out
    assert "fc2" in out.out and "total" in out.out
    assert "[seed 0] pruning stage 3/3" in out.err  # progress goes to stderr


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--epochs-scale", "0"]])
def test_demo_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        demo.main(argv)
