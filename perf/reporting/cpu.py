"""The report's CPU measurement: a compressed layer against its dense twin, side by side.

The dense `nn.Linear` holds exactly the layer's decoded weights; both run forward (float32, no
bias, ``torch.inference_mode``) on the same input, taking turns (`perf.harness.time_interleaved`)
so that the load of other processes hits both alike. The output of `CompressedLinear` is checked
against the dense one before timing. (``python -m perf.bench_cpu`` is the standalone CPU
benchmark with thread counts, torch's sparse CSR and the batch sweep.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from compress.matrix import CompressedMatrix
from perf.harness import time_interleaved

MAX_RELATIVE_ERROR = 1e-4


@dataclass(frozen=True)
class CpuConfig:
    """Batch sizes, timing effort (``rounds`` turns of ``repeat`` calls per form) and the threads
    both forms may use (None: torch's default). On a machine shared with other work, one thread
    avoids the stalls of multi-threaded kernels waiting for a busy core."""

    batches: tuple[int, ...] = (1, 64)
    rounds: int = 3
    repeat: int = 3
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.batches or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batches
        ):
            raise ValueError(f"batches must be positive ints, got {self.batches!r}")
        if self.rounds < 1 or self.repeat < 1:
            raise ValueError(f"rounds and repeat must be >= 1, got {self.rounds} and {self.repeat}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(f"threads must be a positive int or None, got {self.threads!r}")

    def thread_count(self) -> int:
        return torch.get_num_threads() if self.threads is None else self.threads

    @classmethod
    def quick(cls, **overrides) -> CpuConfig:
        """For CI: two rounds of one call (noisier medians)."""
        return cls(**{"rounds": 2, "repeat": 1, **overrides})


def measure_layer(
    name: str, matrix: CompressedMatrix, config: CpuConfig, batches: Iterable[int] | None = None
) -> list[dict]:
    """One row per batch size: dense and compressed medians (us), speed-up, memory of each."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(config.thread_count())
    try:
        return _measure(name, matrix, config, config.batches if batches is None else tuple(batches))
    finally:
        torch.set_num_threads(default_threads)


def _measure(name: str, matrix: CompressedMatrix, config: CpuConfig, batches: tuple[int, ...]) -> list[dict]:
    from dc_kernels import CompressedLinear
    from dc_kernels.cpu.launch import uses_sparse
    from dc_kernels.dense_codes.cpu import kernel_max_batch

    compressed = CompressedLinear.from_matrix(matrix)
    dense = torch.nn.Linear(matrix.in_features, matrix.out_features, bias=False)
    with torch.no_grad():
        dense.weight.copy_(matrix.to_dense_tensor(torch.float32))
    dense_bytes = dense.weight.numel() * dense.weight.element_size()
    generator = torch.Generator().manual_seed(config.seed)
    rows = []
    with torch.inference_mode():
        for batch in batches:
            x = torch.randn(batch, matrix.in_features, generator=generator)
            expected = dense(x)
            error = float((compressed(x) - expected).abs().max()) / (float(expected.abs().max()) + 1e-30)
            if not error <= MAX_RELATIVE_ERROR:
                raise RuntimeError(
                    f"{name}: CompressedLinear differs from the dense layer by {error:.3g} (relative)"
                )
            times = time_interleaved(
                {"dense": lambda x=x: dense(x), "compressed": lambda x=x: compressed(x)},
                rounds=config.rounds,
                repeat=config.repeat,
            )
            rows.append(
                {
                    "layer": name,
                    "inputs": matrix.in_features,
                    "outputs": matrix.out_features,
                    "density": round(matrix.density, 5),
                    "bits": matrix.bits,
                    "batch": batch,
                    "dense_us": times["dense"].median_us,
                    "compressed_us": times["compressed"].median_us,
                    "speedup": times["dense"].median / times["compressed"].median,
                    "path": (
                        ("sparse" if uses_sparse(batch, matrix.density) else "decode+dense")
                        if compressed.effective_form == "sparse"
                        else (
                            "dense codes" if batch <= kernel_max_batch(matrix.in_features) else "decode+dense"
                        )
                    ),
                    "dense_bytes": dense_bytes,
                    "compressed_bytes": compressed.memory_bytes(),
                    "memory_ratio": dense_bytes / compressed.memory_bytes(),
                    "max_rel_error": error,
                    "threads": torch.get_num_threads(),
                    "calls": times["dense"].repeats,
                }
            )
    return rows
