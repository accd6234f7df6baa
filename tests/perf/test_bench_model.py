import csv

import pytest
import torch

from dc_kernels import CompressedLinear
from perf.bench_model import EncoderConfig, build_encoder, compressed_copy, main


def test_encoder_compresses_into_each_form():
    model = build_encoder(
        EncoderConfig(layers=1, hidden=32, heads=4, intermediate=64, vocab=50, max_positions=8)
    )
    ids = torch.randint(0, 50, (2, 5))
    for form in ("sparse", "dense_codes"):
        compressed = compressed_copy(model, 0.8, 4, form)
        layers = [m for m in compressed.modules() if isinstance(m, CompressedLinear)]
        assert len(layers) == 6 and {m.effective_form for m in layers} == {form}
        with torch.no_grad():
            assert compressed(ids).shape == model(ids).shape == (2, 5, 32)


def test_main_writes_csv_and_plot(tmp_path):
    args = ["--densities", "0.8", "--batches", "1", "--seq-len", "2", "--rounds", "1", "--repeat", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_model.csv").open()))
    assert [r["model"] for r in rows] == ["dense", "sparse", "dense_codes", "auto"]
    assert all(float(r["linear_bytes_vs_dense"]) < 0.2 for r in rows[1:])
    assert (tmp_path / "bench_model.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["--densities", "1.5", "--out", str(tmp_path)])
