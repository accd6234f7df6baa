"""Throughput of the offline pipeline and of every encoder, on paper-sized layers (CPU).

For each layer (the registry's shapes and weight densities; a Gaussian dense weight, as a
trained FC layer roughly is) every stage runs on the previous stage's output and is timed
(`perf.harness.time_cpu`, medians):

* ``prune``: magnitude pruning to the layer's density (`compress.pruning.magnitude_mask`);
* ``share``: 1-D k-means of the kept weights and the canonical matrix (`compress.one_shot.share_matrix`);
* ``encode_relative``: the paper's relative-index format; ``encode_huffman`` / ``decode_huffman``:
  stage 3 on its two streams;
* ``gpu_layout`` / ``gpu_huffman_layout``: the fixed-width and Huffman GPU forms (`dc_kernels`),
  built on the CPU;
* ``eie_encode``: EIE's interleaved CSC for 64 PEs (after fitting the codebook to EIE's 15
  non-zero weights, which is not timed).

Rates are in millions of weights per second: dense weights for ``prune``, kept weights for the
rest. One process, the threads torch and NumPy choose.

    python -m perf.bench_pipeline [--layers alex7 vgg6] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from compress.one_shot import share_matrix
from compress.pruning import magnitude_mask
from compress.relative_index import encode_relative
from compress.relative_index_huffman import decode_huffman, encode_huffman
from perf.harness import Progress, doc_summary, machine_info, print_table, time_cpu, write_csv
from workloads.paper_layers import get_layer

COLUMNS = ("layer", "stage", "items", "seconds", "mweights_per_s")
STAGES = (
    "prune",
    "share",
    "encode_relative",
    "encode_huffman",
    "decode_huffman",
    "gpu_layout",
    "gpu_huffman_layout",
    "eie_encode",
)


@dataclass(frozen=True)
class PipelineBenchConfig:
    """Layers (registry names), code and index widths, seed and timing repeats per stage."""

    layers: tuple[str, ...] = ("alex7", "vgg6")
    bits: int = 5
    index_bits: int = 5
    seed: int = 0
    repeat: int = 3

    def __post_init__(self) -> None:
        for name in self.layers:
            get_layer(name)
        if not 1 <= self.bits <= 8 or not 1 <= self.index_bits <= 8:
            raise ValueError(f"bits and index_bits must be in 1..8, got {self.bits} and {self.index_bits}")
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {self.repeat}")

    @classmethod
    def quick(cls, **overrides) -> PipelineBenchConfig:
        """One small layer, one timing per stage."""
        return cls(**{"layers": ("nt-lstm",), "repeat": 1, **overrides})


def _stages(name: str, config: PipelineBenchConfig) -> list[tuple[str, int, Callable[[], object]]]:
    """(stage, weights it handles, call) in pipeline order, each on the output of the previous."""
    from dc_kernels.fixed.layout import GpuLayout
    from dc_kernels.huffman.layout import HuffmanLayout
    from eie_model import encode_eie, fit_codebook

    spec = get_layer(name)
    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.randn(spec.outputs, spec.inputs, generator=generator) * (2.0 / spec.inputs) ** 0.5
    mask = magnitude_mask(weight, spec.weight_density, name=name)
    matrix = share_matrix(weight, mask, config.bits, seed=config.seed, name=name)
    relative = encode_relative(matrix, config.index_bits)
    huffman = encode_huffman(relative)
    eie_matrix = fit_codebook(matrix, 15)
    nnz = matrix.nnz
    return [
        ("prune", weight.numel(), lambda: magnitude_mask(weight, spec.weight_density, name=name)),
        ("share", nnz, lambda: share_matrix(weight, mask, config.bits, seed=config.seed, name=name)),
        ("encode_relative", nnz, lambda: encode_relative(matrix, config.index_bits)),
        ("encode_huffman", nnz, lambda: encode_huffman(relative)),
        ("decode_huffman", nnz, lambda: decode_huffman(huffman)),
        ("gpu_layout", nnz, lambda: GpuLayout.from_matrix(matrix, config.index_bits)),
        ("gpu_huffman_layout", nnz, lambda: HuffmanLayout.from_matrix(matrix)),
        ("eie_encode", nnz, lambda: encode_eie(eie_matrix, 64, 4, 4)),
    ]


def run_pipeline_bench(
    config: PipelineBenchConfig, progress: Callable[[str], None] | None = None
) -> list[dict]:
    """One row per layer and stage (`STAGES`)."""
    rows = []
    for name in config.layers:
        stages = _stages(name, config)
        for stage, items, call in stages:
            timing = time_cpu(call, warmup=0, repeat=config.repeat, min_time=0.0)
            rows.append(
                {
                    "layer": name,
                    "stage": stage,
                    "items": items,
                    "seconds": timing.median,
                    "mweights_per_s": items / timing.median / 1e6,
                    "bits": config.bits,
                    "index_bits": config.index_bits,
                    "repeats": timing.repeats,
                }
            )
        if progress is not None:
            rates = ", ".join(f"{r['stage']} {r['mweights_per_s']:.0f}" for r in rows[-len(stages) :])
            progress(f"pipeline {name}: M weights/s: {rates}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_pipeline", description=doc_summary(__doc__))
    parser.add_argument("--layers", nargs="+", default=["alex7", "vgg6"], help="registry layer names")
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--index-bits", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one timing per stage")
    parser.add_argument("--out", type=Path, default=Path("out/bench_pipeline"), help="output folder")
    args = parser.parse_args(argv)
    fields = {"layers": tuple(args.layers), "bits": args.bits, "index_bits": args.index_bits}
    try:
        config = PipelineBenchConfig.quick(**fields) if args.quick else PipelineBenchConfig(**fields)
    except (KeyError, ValueError) as exc:
        parser.error(str(exc))
    info = machine_info()
    rows = run_pipeline_bench(config, Progress())
    print_table(rows, COLUMNS)
    path = write_csv(args.out / "bench_pipeline.csv", rows, info)
    print(f"wrote {path} (load average {info['load_avg_1min']} on {info['cpu_cores']} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
