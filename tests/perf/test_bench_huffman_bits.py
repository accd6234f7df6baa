"""perf/bench_huffman_bits.py on a small paper layer, its Gaussian variant and the real EIE dump
(when `tests.eie_dump` finds it)."""

import csv

import pytest

from dc_kernels.fixed.layout import GpuLayout
from perf.bench_huffman_bits import EIE_DUMP_VARIABLE, gaussian_layer, main
from tests.eie_dump import DUMP, needs_dump


def test_bench_huffman_bits_runs_small(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(EIE_DUMP_VARIABLE, raising=False)  # no dump row
    args = ["--layers", "nt-lstm", "--bits", "4", "--gaussian"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = {r["layer"]: r for r in csv.DictReader((tmp_path / "huffman_bits.csv").open())}
    assert list(rows) == ["nt-lstm", "nt-lstm-gaussian"]
    for row in rows.values():
        fixed, default = float(row["fixed_gpu"]), float(row["huffman_gpu"])
        least = float(row["huffman_gpu_least"])
        assert float(row["ratio"]) == pytest.approx(default / fixed, abs=2e-3)
        # Every coding stays above the joint symbols' bound less rounding; the GPU form adds pieces.
        assert float(row["entropy"]) - 0.05 < float(row["joint"]) < least < fixed
        assert least <= float(row["huffman_gpu_s64"]) + 0.02 and float(row["paper_ri"]) > float(row["joint"])
    # k-means codes of pruned Gaussian weights are not uniform: fewer bits than uniform random codes.
    assert float(rows["nt-lstm-gaussian"]["entropy"]) < float(rows["nt-lstm"]["entropy"]) - 0.2
    assert (tmp_path / "huffman_bits.png").stat().st_size > 0
    assert "nt-lstm-gaussian 4b" in capsys.readouterr().err  # progress


def test_gaussian_layer_has_the_paper_density_and_fixed_bits():
    matrix = gaussian_layer("nt-lstm", 5)
    assert matrix.shape == (2400, 1201) and matrix.bits == 5 and abs(matrix.density - 0.1) < 1e-4
    assert GpuLayout.from_matrix(matrix).bits_per_kept_weight() > 5


def test_a_dump_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--layers", "nt-we", "--dump", str(tmp_path / "absent"), "--out", str(tmp_path)])
    assert "absent: no such folder" in capsys.readouterr().err


@needs_dump
def test_real_alexnet_fc8_reaches_0_85_in_the_least_memory_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(EIE_DUMP_VARIABLE, str(DUMP))  # the default of --dump
    assert main(["--layers", "nt-we", "--bits", "4", "--out", str(tmp_path)]) == 0
    row = list(csv.DictReader((tmp_path / "huffman_bits.csv").open()))[-1]
    assert row["layer"] == "eie-dump-eie_alexnet_fc8" and row["nnz"] == "1051991"
    # The goal: against the fixed-width GPU layout (0.76x). Against the paper's relative-index
    # format 0.855x (0.847x before a warp's lanes were padded to interleave their words).
    assert float(row["huffman_gpu_least"]) / float(row["fixed_gpu"]) <= 0.85
    assert float(row["huffman_gpu_least"]) / float(row["paper_ri"]) <= 0.86
