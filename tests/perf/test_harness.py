import csv

import pytest

from perf.harness import Progress, machine_info, time_interleaved, write_csv


def test_machine_info_records_load_and_cores():
    info = machine_info()
    assert int(info["cpu_cores"]) >= 1 and int(info["cpu_threads"]) >= 1
    assert float(info["load_avg_1min"]) >= 0
    assert {"date", "commit", "torch", "numpy", "python", "cpu"} <= info.keys()


def test_time_interleaved_takes_turns():
    order = []
    timings = time_interleaved(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3, repeat=2
    )
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 3  # one warm-up each, then alternating rounds
    for timing in timings.values():
        assert timing.repeats == 6 and 0 <= timing.low <= timing.high
    with pytest.raises(ValueError, match="rounds"):
        time_interleaved({"a": lambda: None}, rounds=0)


def test_write_csv_adds_provenance(tmp_path):
    path = write_csv(tmp_path / "sub" / "x.csv", [{"a": 1}, {"a": 2, "b": 3}], {"commit": "c"})
    rows = list(csv.DictReader(path.open()))
    assert rows == [{"a": "1", "b": "", "commit": "c"}, {"a": "2", "b": "3", "commit": "c"}]


def test_progress_goes_to_stderr(capsys):
    Progress()("hello")
    Progress(enabled=False)("quiet")
    captured = capsys.readouterr()
    assert captured.out == "" and "hello" in captured.err and "quiet" not in captured.err
