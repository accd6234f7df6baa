import csv
from types import SimpleNamespace

import pytest
import torch

from perf import harness
from perf.harness import (
    DRY_RUN_GPU_PREFIX,
    Progress,
    Timing,
    format_table,
    gpu_run_info,
    machine_info,
    parse_nvidia_smi,
    time_interleaved,
    write_csv,
)


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


def test_timing_from_samples_cuts_the_extreme_tenths():
    timing = Timing.from_samples([9.0, *range(1, 9), 100.0])  # 1..9 and one outlier, unordered
    assert (timing.median, timing.low, timing.high, timing.repeats) == (5.5, 2, 9.0, 10)
    assert Timing.from_samples([3.0]).median_us == 3e6
    with pytest.raises(ValueError, match="no timing samples"):
        Timing.from_samples([])


def test_progress_appends_to_its_log_and_counts_down_its_budget(tmp_path, capsys):
    log = tmp_path / "run" / "log.txt"
    progress = Progress(log_path=log, budget_s=3600)
    progress("first")
    Progress(enabled=False, log_path=log)("second")  # appended, not printed
    lines = log.read_text().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["first", "second"]
    assert "second" not in capsys.readouterr().err
    assert 3590 < progress.left() <= 3600 and Progress().left() == float("inf")
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="budget_s"):
            Progress(budget_s=bad)


def test_parse_nvidia_smi_names_the_columns():
    parsed = parse_nvidia_smi("550.54.15, 1980, 1980, 2619, 700.00\n")
    assert parsed == {
        "gpu_driver": "550.54.15",
        "gpu_sm_clock_mhz": "1980",
        "gpu_sm_clock_max_mhz": "1980",
        "gpu_mem_clock_mhz": "2619",
        "gpu_power_limit_w": "700.00",
    }
    for garbage in ("", "No devices were found\n"):
        assert set(parse_nvidia_smi(garbage).values()) == {"unknown"}


def test_git_commit_falls_back_to_the_environment(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(harness.subprocess, "run", no_git)
    monkeypatch.delenv(harness.COMMIT_ENV, raising=False)
    assert harness.git_commit() == "unknown"
    monkeypatch.setenv(harness.COMMIT_ENV, "0123abcd")
    assert harness.git_commit() == "0123abcd"


def test_gpu_run_info_off_cuda_names_the_dry_run():
    info = gpu_run_info("cpu")
    assert info["gpu"].startswith(DRY_RUN_GPU_PREFIX) and info["device"] == "cpu"
    assert {"date", "commit", "torch", "triton"} <= info.keys()
    assert "gpu" not in machine_info("cpu")  # CPU benchmarks carry no GPU column


def test_format_table_aligns_and_rounds():
    lines = format_table([{"a": 1234.5, "b": 0.012345}, {"a": None, "b": "x"}], ["a", "b"])
    assert lines == ["   a       b", "1234  0.0123", "           x"]


def test_gpu_info_reads_torch_properties_and_nvidia_smi_of_the_same_device(monkeypatch):
    """The CUDA path with stand-ins for the device properties and nvidia-smi (no GPU needed)."""
    props = SimpleNamespace(
        name="NVIDIA H200",
        major=9,
        minor=0,
        multi_processor_count=132,
        total_memory=150 << 30,
        L2_cache_size=50 << 20,
        uuid="0a1b2c3d-0000-1111-2222-333344445555",
    )
    commands = []

    def fake_smi(cmd, **kwargs):
        commands.append(cmd)
        return SimpleNamespace(stdout="565.57.01, 345, 1980, 3201, 700.00\n")

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    monkeypatch.setattr(harness.subprocess, "run", fake_smi)
    info = harness.gpu_info("cuda:0")
    assert commands[0][0] == "nvidia-smi" and commands[0][-2:] == ["-i", f"GPU-{props.uuid}"]
    assert info["gpu"] == "NVIDIA H200" and info["gpu_capability"] == "9.0"
    assert info["gpu_l2_bytes"] == str(50 << 20) and info["gpu_driver"] == "565.57.01"
    assert info["gpu_sm_clock_mhz"] == "345" and info["gpu_sm_clock_max_mhz"] == "1980"
