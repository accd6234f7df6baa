"""perf/bench_oneshot.py: its text, its tables and plot, and one run on a tiny BERT (when the
optional transformers package is installed; the benchmark's models need it)."""

import pytest
import torch

from perf.bench_oneshot import _CODE, CALIBRATION_SENTENCES, plot, readme, reference_sentences, run


def test_sentences_are_prose_deterministic_and_enough_for_calibration_and_evaluation():
    sentences = reference_sentences()
    assert len(sentences) >= CALIBRATION_SENTENCES + 512 and len(set(sentences)) == len(sentences)
    assert sentences == reference_sentences()
    assert all(8 <= len(s.split()) <= 40 and s[0].isupper() and not _CODE.search(s) for s in sentences)


ROWS = [
    dict(model=m, method=method, density=d, bits=4, mean_cosine=c, seconds=10.0, cpu_seconds=19.0)
    for m in ("minilm", "random")
    for d in (0.7, 0.5)
    for method, c in (("magnitude+kmeans", 0.9), ("obs+obs", 0.96))
]


def test_readme_tables_and_plot(tmp_path):
    info = {"cpu": "cpu", "cpu_threads": "2", "load_avg_1min": "1.00", "torch": "2", "commit": "abc"}
    text = readme(ROWS, info, 512)
    assert "## minilm" in text and "## random" in text
    assert "| obs+obs | 0.9600, 10.0 (19.0) | 0.9600, 10.0 (19.0) |" in text
    assert plot(ROWS, tmp_path / "p.png").stat().st_size > 0


def test_one_run_on_a_tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = transformers.BertModel(config).eval()
    g = torch.Generator().manual_seed(0)

    def batch(n):
        return {"input_ids": torch.randint(0, 50, (n, 6), generator=g), "attention_mask": torch.ones(n, 6)}

    calibration, held_out = [batch(8), batch(8)], [batch(5)]
    from perf.bench_oneshot import embed

    reference = embed(model, held_out)
    row = run(model, calibration, held_out, reference, "obs+obs", "0.5/4")
    assert row["layers"] == 6 and row["method"] == "obs+obs" and (row["density"], row["bits"]) == (0.5, 4)
    assert 0.5 < row["mean_cosine"] <= 1.0 and row["min_cosine"] <= row["mean_cosine"]
    assert 0 < row["mean_layer_error"] <= row["max_layer_error"]
