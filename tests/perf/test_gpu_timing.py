"""The shared GPU timer's logic that needs no CUDA: the flush size, argument checks, the CPU path."""

import pytest
import torch

from perf import gpu_timing
from perf.gpu_timing import FLUSH_L2_MULTIPLE, MIN_FLUSH_BYTES, GpuTimer, flush_bytes

MIB = 1 << 20


@pytest.mark.parametrize(
    ("l2_bytes", "expected"),
    [
        (40 * MIB, MIN_FLUSH_BYTES),  # A100: 4 x 40 MiB is below the floor
        (50 * MIB, MIN_FLUSH_BYTES),  # H100 / H200
        (96 * MIB, 4 * 96 * MIB),  # a larger L2: four times it
        (96 * MIB + 1, (4 * 96 + 1) * MIB),  # rounded up to whole MiB
        (1, MIN_FLUSH_BYTES),
    ],
)
def test_flush_is_four_times_l2_with_a_floor(l2_bytes, expected):
    assert FLUSH_L2_MULTIPLE == 4
    assert flush_bytes(l2_bytes) == expected
    assert flush_bytes(l2_bytes) >= FLUSH_L2_MULTIPLE * l2_bytes and flush_bytes(l2_bytes) % MIB == 0


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, None, "50MiB"])
def test_flush_size_refuses_a_non_positive_or_non_integer_l2(bad):
    with pytest.raises(ValueError, match="l2_bytes"):
        flush_bytes(bad)


@pytest.mark.parametrize(("name", "value"), [("cold_runs", 0), ("replays", -1), ("cold_runs", 2.0)])
def test_timer_refuses_bad_counts(name, value):
    with pytest.raises(ValueError, match=name):
        GpuTimer("cpu", **{name: value})


def test_cpu_path_times_cold_runs_calls_without_flush_or_graph():
    calls = []
    timer = GpuTimer(torch.device("cpu"), cold_runs=5)
    cold = timer.cold(lambda: calls.append("cold"))
    warm = timer.warm(lambda: calls.append("warm"))
    assert calls == ["cold"] * 5 + ["warm"] * 5  # no warm-up call and no graph of 50 off CUDA
    assert cold.repeats == warm.repeats == 5 and 0 <= cold.low <= cold.median <= cold.high
    assert not timer.on_gpu and timer.describe() == {
        "flush_bytes": 0,
        "cold_runs": 5,
        "graph_calls": 0,
        "warm_replays": 0,
    }
    with pytest.raises(ValueError, match="calls"):
        timer.warm(lambda: None, calls=0)


def test_one_setting_for_both_benchmarks():
    """The defaults the two GPU scripts share (their numbers are comparable)."""
    timer = GpuTimer("cpu")
    assert timer.cold_runs == gpu_timing.COLD_RUNS and timer.replays == gpu_timing.WARM_REPLAYS
