import csv
import itertools

import pytest
import torch

from dc_kernels.cpu import build as cpu_build
from perf.bench_cpu import CODES_SWEEP_BATCHES, STACKS, main, plot_layers, stack_verdicts
from workloads import get_layer


@pytest.fixture(autouse=True)
def compiled_kernels():
    if cpu_build.library() is None:
        pytest.skip(f"no C compiler: {cpu_build.failure()}")


def test_layers_side_by_side(tmp_path, capsys):
    args = ["--layers", "nt-we", "--batches", "1", "3", "--threads", "1", "--rounds", "1", "--repeat", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_cpu.csv").open()))
    assert [(r["layer"], r["batch"], r["threads"]) for r in rows] == [
        ("nt-we", "1", "1"),
        ("nt-we", "3", "1"),
    ]
    for row in rows:
        assert float(row["dense_ms"]) > 0 and float(row["compressed_ms"]) > 0
        for name in ("dense", "compressed"):  # the fastest round's median: at most the median of all calls
            assert 0 < float(row[f"{name}_best_ms"]) <= float(row[f"{name}_ms"]) * (1 + 1e-9)
        best = float(row["dense_best_ms"]) / float(row["compressed_best_ms"])
        assert float(row["speedup_best"]) == pytest.approx(best)
        assert float(row["rel_error"]) < 1e-5
        assert 0 < float(row["memory_ratio"]) < 1 and row["commit"] and row["load_avg_1min"]
    assert "conditions:" in capsys.readouterr().out
    assert (tmp_path / "bench_cpu.png").stat().st_size > 0  # more than one batch: a plot


def test_stacks_chain_their_layers():
    for names in STACKS.values():
        specs = [get_layer(name) for name in names]
        assert all(a.outputs == b.inputs for a, b in itertools.pairwise(specs))


def test_stack_times_every_layer_inside_it(tmp_path, capsys):
    args = ["--stacks", "alexnet", "--batches", "1", "2", "--threads", "1", "--rounds", "1", "--repeat", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_cpu_stacks.csv").open()))
    assert [(r["layer"], r["batch"]) for r in rows] == [(n, b) for b in "12" for n in STACKS["alexnet"]]
    for row in rows:
        assert float(row["dense_ms"]) > 0 and float(row["compressed_ms"]) > 0
        assert float(row["speedup"]) == pytest.approx(float(row["dense_ms"]) / float(row["compressed_ms"]))
    out = capsys.readouterr().out
    assert "alexnet, 1 thread(s): slowest layer" in out and "conditions:" in out
    assert (tmp_path / "bench_cpu_stacks.png").stat().st_size > 0


def test_stack_verdicts_name_the_slow_layers():
    rows = [
        {"stack": "alexnet", "threads": 1, "layer": layer, "batch": batch, "speedup": speedup}
        for layer, batch, speedup in (("alex6", 1, 2.5), ("alex8", 1, 0.85), ("alex8", 2, 1.2))
    ]
    (line,) = stack_verdicts(rows)
    assert line == "alexnet, 1 thread(s): slowest layer 0.85x nn.Linear (goal >= 0.9x: MISSED: alex8 batch 1)"
    (line,) = stack_verdicts(rows[:1])
    assert line.endswith("(goal >= 0.9x: met)")


def test_layers_plot_from_the_csv(tmp_path):
    rows = [
        {"layer": layer, "batch": str(batch), "threads": str(threads), "speedup": str(speedup)}
        for layer, speedup in (("alex8", 0.8), ("vgg6", 4.0))
        for threads in (1, 2)
        for batch in (1, 2, 64)
    ]
    plot_layers(rows, tmp_path / "layers.png")
    assert (tmp_path / "layers.png").stat().st_size > 0


def test_sweep_writes_csv_and_plot(tmp_path):
    threads = torch.get_num_threads()
    assert main(["--sweep", "--sweep-size", "96", "--threads", "1", "--rounds", "1", "--repeat", "1",
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "bench_cpu_sweep.csv").open()))
    assert len(rows) == 5 * 8 and {r["auto_path"] for r in rows} == {"sparse", "decode+gemm"}
    assert (tmp_path / "bench_cpu_sweep.png").stat().st_size > 0
    assert torch.get_num_threads() == threads  # restored


def test_forms_write_csv_plot_and_verdicts(tmp_path, capsys):
    args = ["--forms", "--shapes", "minilm-attn", "--threads", "1", "--rounds", "1", "--repeat", "1"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_cpu_forms.csv").open()))
    assert [(r["density"], r["batch"]) for r in rows] == [
        ("0.5", "1"),
        ("0.5", "32"),
        ("0.8", "1"),
        ("0.8", "32"),
    ]
    for row in rows:
        assert float(row["dense_codes_bytes_ratio"]) < 1 / 6 and row["auto_form"] in ("sparse", "dense_codes")
        # one call a round: the fastest round's ratio is the median's
        assert float(row["auto_speedup_best"]) == pytest.approx(float(row["auto_speedup"]))
    assert (tmp_path / "bench_cpu_forms.png").stat().st_size > 0
    assert "minilm-attn density 0.8 batch 32: auto" in capsys.readouterr().out
    assert {r["bits"] for r in rows} == {"4"}


def test_forms_at_other_code_bits(tmp_path):
    args = ["--forms", "--shapes", "minilm-attn", "--threads", "1", "--rounds", "1", "--repeat", "1"]
    assert main([*args, "--form-bits", "5", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "bench_cpu_forms.csv").open()))
    assert len(rows) == 4 and {r["bits"] for r in rows} == {"5"}


def test_codes_sweep_writes_csv_and_plot(tmp_path):
    assert main(["--sweep-codes", "--codes-shapes", "64x1100", "40x3", "--threads", "1", "--rounds", "1",
                 "--repeat", "1", "--out", str(tmp_path)]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "bench_cpu_codes_sweep.csv").open()))
    # 1100 inputs: one 2 MB block of x holds 468 rows, decode + GEMM beyond
    assert {r["auto_path"] for r in rows if r["in"] == "1100"} == {"codes", "decode+gemm"}
    assert [(r["out"], r["in"]) for r in rows] == [("64", "1100")] * len(CODES_SWEEP_BATCHES) + [
        ("40", "3")
    ] * len(CODES_SWEEP_BATCHES)
    assert (tmp_path / "bench_cpu_codes_sweep.png").stat().st_size > 0
