"""The GPU benchmarks' one timer: cold calls (L2 flushed before each) and warm calls (CUDA graph
replay), medians of CUDA-event timings.

* **Cold**: before every timed call the timer overwrites a buffer of `flush_bytes` (at least
  `FLUSH_L2_MULTIPLE` times the device's L2 and at least `MIN_FLUSH_BYTES`), so that the call
  finds none of its operands in L2 and reads them from device memory, as a layer used once per
  forward pass of a large model does. The flushes and calls are queued without waiting on the
  host: the host enqueues the next call while the GPU writes the buffer, so the host's launch
  time is not counted as long as it is shorter than a flush (hence the floor). The result is the
  median over `COLD_RUNS` calls, each between two CUDA events.
* **Warm**: `GRAPH_CALLS` back-to-back calls captured in one CUDA graph (no host launch overhead;
  operands stay in L2 where they fit), replayed `WARM_REPLAYS` times; the median over the replays
  of the time per call. A function that cannot be captured (cuSPARSE calls, for one) runs as
  eager back-to-back calls instead, and the timer's ``log`` says so.

Off CUDA (a dry run under Triton's interpreter) there is no L2 to flush, no graph and nothing to
compile: both are the wall-clock median of ``cold_runs`` calls without a warm-up call
(`perf.harness.time_cpu`), numbers that only show that the script runs. Importing this module
does not initialize CUDA.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from perf.harness import Timing, time_cpu

# Four times the L2: L2 replacement is not strictly least-recently-used, so writing just its size
# can leave lines of the previous call behind.
FLUSH_L2_MULTIPLE = 4
# A flush also hides the host's launch of the timed call, so it must keep the GPU busy longer than
# a launch from Python takes (tens of microseconds): 256 MiB is 55-80 us of writes at the H100's
# and H200's memory bandwidth (3.35 and 4.8 TB/s).
MIN_FLUSH_BYTES = 256 << 20
# L2 size assumed where torch does not report it: above the L2 of the data-center GPUs of the
# Ampere and Hopper generations (A100 40 MiB, H100/H200 50 MiB).
FALLBACK_L2_BYTES = 64 << 20
COLD_RUNS = 25
GRAPH_CALLS = 50
WARM_REPLAYS = 7


def flush_bytes(l2_bytes: int) -> int:
    """Bytes to overwrite before a cold call on a device with ``l2_bytes`` of L2: at least
    `FLUSH_L2_MULTIPLE` x L2 and at least `MIN_FLUSH_BYTES`, rounded up to whole MiB."""
    if isinstance(l2_bytes, bool) or not isinstance(l2_bytes, int) or l2_bytes <= 0:
        raise ValueError(f"l2_bytes must be a positive integer, got {l2_bytes!r}")
    mib = 1 << 20
    return max(MIN_FLUSH_BYTES, -(-FLUSH_L2_MULTIPLE * l2_bytes // mib) * mib)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class GpuTimer:
    """Cold and warm timings of calls on ``device`` (see the module docstring); ``log`` receives a
    line when a warm timing falls back to eager calls."""

    def __init__(
        self,
        device: torch.device | str,
        *,
        cold_runs: int = COLD_RUNS,
        replays: int = WARM_REPLAYS,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.cold_runs = _positive("cold_runs", cold_runs)
        self.replays = _positive("replays", replays)
        self.log = log
        self._flush: torch.Tensor | None = None

    @property
    def on_gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def flush_bytes(self) -> int:
        """The L2 flush size on this device (0 off CUDA)."""
        if not self.on_gpu:
            return 0
        l2 = getattr(torch.cuda.get_device_properties(self.device), "L2_cache_size", 0)
        return flush_bytes(l2 if l2 > 0 else FALLBACK_L2_BYTES)

    def describe(self) -> dict[str, int]:
        """The timer's settings, for a run's provenance (flush and graph 0 off CUDA: not used)."""
        return {
            "flush_bytes": self.flush_bytes,
            "cold_runs": self.cold_runs,
            "graph_calls": GRAPH_CALLS if self.on_gpu else 0,
            "warm_replays": self.replays if self.on_gpu else 0,
        }

    def cold(self, fn: Callable[[], object]) -> Timing:
        """Median time of ``fn()`` with L2 flushed before every call (after one untimed call on
        the GPU)."""
        if not self.on_gpu:
            return time_cpu(fn, warmup=0, repeat=self.cold_runs, min_time=0.0)
        if self._flush is None:
            self._flush = torch.empty(self.flush_bytes, dtype=torch.int8, device=self.device)
        fn()
        pairs = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(self.cold_runs)
        ]
        for start, end in pairs:
            self._flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(self.device)
        return Timing.from_samples([start.elapsed_time(end) * 1e-3 for start, end in pairs])

    def warm(self, fn: Callable[[], object], calls: int = GRAPH_CALLS) -> Timing:
        """Median time per call of ``calls`` back-to-back calls of ``fn()`` replayed from a CUDA
        graph (after one untimed call on the GPU)."""
        _positive("calls", calls)
        if not self.on_gpu:
            return time_cpu(fn, warmup=0, repeat=self.cold_runs, min_time=0.0)
        fn()
        run = self._graph(fn, calls)
        samples = []
        for _ in range(self.replays):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            torch.cuda.synchronize(self.device)
            samples.append(start.elapsed_time(end) * 1e-3 / calls)
        return Timing.from_samples(samples)

    def _graph(self, fn: Callable[[], object], calls: int) -> Callable[[], None]:
        """A CUDA graph's replay of ``calls`` calls, or eager calls where ``fn`` is not capturable."""
        torch.cuda.synchronize(self.device)
        try:
            # A call on a side stream first: capture needs the lazy initializations done (cuBLAS
            # workspaces, Triton's compilation) and the caching allocator warmed on a non-default stream.
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                fn()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(calls):
                    fn()
            return graph.replay
        except Exception as exc:  # any capture error: the eager fallback is still a valid timing
            torch.cuda.synchronize(self.device)
            if self.log is not None:
                self.log(f"warm timing: not capturable ({type(exc).__name__}: {exc!s:.200}); eager calls")

            def eager() -> None:
                for _ in range(calls):
                    fn()

            return eager
