import csv
import os

import numpy as np

from perf.bench_codec import main, pruned_gaussian_tail


def test_bench_codec_runs_small(tmp_path, capsys):
    cores = os.sched_getaffinity(0)
    assert main(["--scale", "0.002", "--segments", "64", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_codec.csv").open()))
    assert [r["stream"] for r in rows] == ["codes_uniform", "codes_kmeans", "z"]
    for row in rows:
        assert float(row["encode_msym_s"]) > 0 and float(row["decode_msym_s"]) > 0
        # Huffman stays within one bit of the entropy; the stored bits add the overhead.
        assert float(row["entropy_bits"]) <= float(row["payload_bits"]) < float(row["entropy_bits"]) + 1
        assert float(row["stored_bits"]) > float(row["payload_bits"])
    assert (tmp_path / "bench_codec.png").stat().st_size > 0
    assert "Huffman" in capsys.readouterr().out
    assert os.sched_getaffinity(0) == cores  # the one-core pinning is undone


def test_pruned_gaussian_tail_keeps_the_tails():
    values = pruned_gaussian_tail(10_000, 0.04, np.random.default_rng(0))
    assert values.size == 10_000 and np.abs(values).min() > 1.9  # |x| > t, t ~ 2.05 for 4%
    assert abs(np.mean(values > 0) - 0.5) < 0.03
