import json
from functools import partial

import numpy as np
import pandas as pd
import pytest

from eie_model import EIEConfig, run_sweep
from eie_model.__main__ import main
from tests.eie_dump import DUMP, needs_dump
from workloads import benchmark_inputs, random_compressed_matrix

SMALL = partial(benchmark_inputs, scale=0.1)

REQUIRED = (
    "layer",
    "cycles",
    "time_us",
    "ideal_cycles",
    "theoretical_us",
    "load_efficiency",
    "useful_efficiency",
    "energy_at_chip_power_uj",
    "entries",
    "padding_entries",
    "energy_uj",
    "power_mw",
    "output_checksum",
)


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_simulate_one_benchmark_json(capsys):
    data = _json(capsys, ["simulate", "--benchmark", "vgg7", "--scale", "0.1", "--json"])
    assert isinstance(data, dict) and data["layer"] == "vgg7"
    assert all(key in data for key in REQUIRED)
    assert data["config"]["pes"] == 64 and data["config"]["fifo_depth"] == 8


def test_simulate_all_gives_a_list_and_honours_the_design_flags(capsys):
    data = _json(
        capsys,
        ["simulate", "--benchmark", "all", "--scale", "0.05", "--pes", "16", "--fifo", "4", "--json"],
    )
    assert [d["layer"] for d in data] == [
        "alex6", "alex7", "alex8", "vgg6", "vgg7", "vgg8", "nt-we", "nt-wd", "nt-lstm",
    ]  # fmt: skip
    assert all(d["config"]["pes"] == 16 and d["config"]["fifo_depth"] == 4 for d in data)
    assert all(key in d for d in data for key in REQUIRED)


def test_simulate_table_and_errors(capsys):
    assert main(["simulate", "--benchmark", "nt-we", "--scale", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "load eff" in out and "nt-we" in out
    assert main(["simulate", "--benchmark", "alex8", "--fifo", "0"]) == 2
    assert "fifo_depth" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--benchmark", "alex9"])


def test_semantics_and_workload_flags(capsys):
    argv = ["simulate", "--benchmark", "alex8", "--scale", "0.1", "--json"]
    uniform = _json(capsys, argv)
    fc8 = _json(capsys, [*argv, "--workload", "fc8-stats"])
    assert fc8["output_checksum"] != uniform["output_checksum"]
    assert uniform == {
        **_json(capsys, [*argv, "--workload", "uniform"]),
        "sim_seconds": uniform["sim_seconds"],
    }
    paper = _json(capsys, [*argv, "--semantics", "paper-simulator", "--fifo", "9"])
    hardware = _json(capsys, [*argv, "--fifo", "8"])
    assert paper["semantics"] == "paper-simulator" and paper["config"]["semantics"] == "paper-simulator"
    assert paper["cycles"] == hardware["cycles"]  # a queue of size 9 holds 8
    assert main([*argv, "--semantics", "paper-simulator", "--fifo", "1"]) == 2
    assert "error: fifo_depth must be >= 2" in capsys.readouterr().err
    assert main(["simulate", "--digits", "--workload", "fc8-stats"]) == 2
    assert "error: --workload applies to --benchmark" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--semantics", "rtl"])


@needs_dump
def test_sweep_includes_the_dump(capsys, tmp_path):
    argv = ["sweep", "fifo", "--values", "2,9", "--benchmark", "alex8", "--scale", "0.1"]
    assert (
        main([*argv, "--eie-dump", str(DUMP), "--semantics", "paper-simulator", "--out", str(tmp_path)]) == 0
    )
    table = pd.read_csv(json.loads(capsys.readouterr().out)["csv"])
    dump = table[table["benchmark"] == "dump:eie_alexnet_fc8"]
    assert dump["cycles"].tolist() == [10195, 7897]
    assert (table["semantics"] == "paper-simulator").all() and table["useful_efficiency"].between(0, 1).all()


@needs_dump
def test_simulate_dump_json(capsys):
    data = _json(capsys, ["simulate", "--eie-dump", str(DUMP), "--json"])
    assert data["shape"] == [1000, 4097] and data["entries"] == 1_051_991
    assert data["padding_entries"] == 0


def test_sweep_writes_csv_and_png(capsys, tmp_path):
    argv = ["sweep", "fifo", "--values", "1,4,16", "--benchmark", "alex8", "nt-lstm", "--scale", "0.1"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "[6/6]" in captured.err  # progress
    paths = json.loads(captured.out)
    table = pd.read_csv(paths["csv"])
    assert len(table) == 6 and set(table["value"]) == {1, 4, 16}
    assert (tmp_path / "eie_sweep_fifo.png").stat().st_size > 1000
    for _, group in table.groupby("benchmark"):
        assert group["cycles"].is_monotonic_decreasing


@pytest.mark.parametrize("sweep", ["pes", "sram-width", "index-bits"])
def test_other_sweeps(sweep):
    table = run_sweep(sweep, ["nt-lstm"], SMALL)
    assert len(table) >= 6 and table["cycles"].gt(0).all()
    if sweep == "sram-width":
        assert table["cycles"].nunique() == 1  # width changes energy, not time
        assert table["spmat_line_reads"].is_monotonic_decreasing
    if sweep == "index-bits":
        assert table["padding_entries"].is_monotonic_decreasing


def test_sweep_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown sweep"):
        run_sweep("clock", ["alex8"], SMALL)
    with pytest.raises(ValueError, match="sram_width"):
        run_sweep("sram-width", ["alex8"], SMALL, [4])
    with pytest.raises(ValueError, match="at least one value"):
        run_sweep("fifo", ["alex8"], SMALL, [])
    with pytest.raises(ValueError, match="at least one layer"):
        run_sweep("fifo", [], SMALL)


def test_sweep_over_layers_the_caller_holds():
    """The sweep takes its layers from the caller: here two layers held in a dict, fetched once
    each with the base design's weight width."""
    held = {
        name: (random_compressed_matrix(40, 30, 0.3, 4, seed=s, codebook_size=15), np.ones(30, np.float32))
        for s, name in enumerate(["a", "b"])
    }
    fetched = []

    def lookup(name, weight_bits):
        fetched.append((name, weight_bits))
        return held[name]

    table = run_sweep("pes", ["b", "a"], lookup, [1, 2, 4], EIEConfig(weight_bits=4))
    assert fetched == [("b", 4), ("a", 4)]
    assert list(table["benchmark"]) == ["b"] * 3 + ["a"] * 3
    assert table.groupby("benchmark")["cycles"].apply(lambda c: c.is_monotonic_decreasing).all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--clock-mhz", "inf"], "must be a finite number above 0"),
        (["--clock-mhz", "nan"], "must be a finite number above 0"),
        (["--clock-mhz", "-5"], "must be a finite number above 0"),
        (["--clock-mhz", "fast"], "not a number"),
        (["--scale", "inf"], "must be a finite number above 0"),
        (["--clock-mhz", "1e308"], "NaN or infinity"),  # finite, but the results overflow
        (["--pes", "0"], "pes must be in"),
        (["--sram-width", "3"], "sram_width must be in"),
    ],
)
def test_every_bad_value_is_one_clean_error_line(capsys, argv, message):
    """A traceback or invalid JSON never: argparse's usage error (exit 2) or one ``error:`` line."""
    try:
        code = main(["simulate", "--benchmark", "alex8", "--scale", "0.05", *argv, "--json"])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.err.strip().splitlines()[-1].startswith(("error:", "usage:", "python -m eie_model"))
