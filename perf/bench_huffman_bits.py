"""What to Huffman-code for the GPU, measured: bits per kept weight of the candidate codings.

For the paper's nine FC layers (random layers at their densities: uniform codes, uniformly
placed kept weights), with ``--gaussian`` the same shapes with codes from k-means (linear init)
on Gaussian weights pruned by magnitude to the layer's density, the EIE authors' real compressed
AlexNet fc8 layer (``--dump DIR``, or the folder in the ``EIE_DUMP`` environment variable; the dump
is not part of the repository) and, with ``--digits``, the trained LeNet-300-100 layers of
`dcomp demo`:

* ``entropy``: H(codes) + H(gaps), the bound for coding codes and gaps independently;
* ``codes_only``: Huffman codes + the fixed-width layout's index fields (gaps not coded);
* ``gaps_only``: Huffman gaps (with escapes) + fixed-width codes;
* ``separate``: Huffman codes and Huffman gaps, two streams (two lookups per weight);
* ``joint``: one Huffman code over (code, gap) symbols with escapes (one lookup per weight);
* ``huffman_gpu``: everything the Huffman GPU form holds (`HuffmanLayout`: stream with its raw
  bits, lane padding, spans, row order, warp offsets, decode table, codebook) as
  `HuffmanLayout.from_matrix` makes it by default (short pieces on small layers, a table of a few
  cache lines), ``huffman_gpu_s64`` with pieces of 64 symbols, ``huffman_gpu_least`` the
  least-memory layout (`dc_kernels.huffman.layout.LEAST_MEMORY`); ``lane_utilization``: the
  default layout's share of lane-steps that decode a symbol at batch 1 in float16
  (`HuffmanLayout.lane_utilization` with the steps the fused kernel runs);
* ``fixed_gpu``: everything the fixed-width GPU layout holds (`GpuLayout`); ``paper_ri``: the
  paper's relative-index format at its best index width.

Streams are length-limited to 10 bits (the largest GPU decode table) and each coding takes its
best escape width. CPU only; writes ``huffman_bits.csv`` and ``huffman_bits.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from compress.huffman import HuffmanCode
from compress.matrix import CompressedMatrix
from compress.one_shot import compress_matrix
from compress.relative_index import encode_relative
from dc_kernels.fixed.layout import GpuLayout
from dc_kernels.huffman.launch import launch_config, steps_granularity
from dc_kernels.huffman.layout import LEAST_MEMORY, MAX_TABLE_BITS, HuffmanLayout
from eie_model.dump import read_eie_dump
from perf.harness import doc_summary, machine_info, print_table, write_csv
from workloads.paper_layers import PAPER_LAYERS

# The Huffman GPU forms measured: column suffix -> `HuffmanLayout.from_matrix` arguments.
HUFFMAN_FORMS = {"": {}, "_s64": {"segment_symbols": 64}, "_least": LEAST_MEMORY}
INDEX_BITS = range(2, 9)  # the paper's relative-index widths tried
#: The environment variable that may name the EIE authors' dump folder (``--dump``'s default).
EIE_DUMP_VARIABLE = "EIE_DUMP"
ESCAPES = tuple(1 << i for i in range(1, 9))


def _entropy_bits(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum() * counts.sum())


def _huffman_bits(counts: np.ndarray) -> int:
    return HuffmanCode.from_counts(counts, MAX_TABLE_BITS).encoded_bits(counts)


def row_gaps(matrix: CompressedMatrix) -> np.ndarray:
    """Pruned columns before each kept weight since the previous kept weight of its row."""
    cols = matrix.col_idx.astype(np.int64)
    prev = np.full(cols.size, -1, dtype=np.int64)
    if cols.size:
        prev[1:] = cols[:-1]
        starts = matrix.row_ptr[:-1]
        prev[starts[starts < cols.size]] = -1
    return cols - prev - 1


def measure(name: str, matrix: CompressedMatrix) -> dict:
    n, k = matrix.nnz, int(matrix.codebook.size)
    codes = matrix.codes.astype(np.int64)
    gaps = row_gaps(matrix)
    code_counts = np.bincount(codes, minlength=k)
    fixed = GpuLayout.from_matrix(matrix)
    joint = separate = gaps_only = None
    for escape in ESCAPES:
        if k * escape + 1 > 1 << MAX_TABLE_BITS:
            break
        q, r = gaps // escape, gaps % escape
        gap_counts = np.append(np.bincount(r, minlength=escape), q.sum())
        joint_counts = np.append(np.bincount(codes * escape + r, minlength=k * escape), q.sum())
        gap_bits = _huffman_bits(gap_counts)
        candidates = {
            "joint": _huffman_bits(joint_counts),
            "separate": gap_bits + _huffman_bits(code_counts),
            "gaps_only": gap_bits + n * matrix.bits,
        }
        joint = min(joint or candidates["joint"], candidates["joint"])
        separate = min(separate or candidates["separate"], candidates["separate"])
        gaps_only = min(gaps_only or candidates["gaps_only"], candidates["gaps_only"])
    # The fixed-width layout's index fields of its kept weights and fillers, codes Huffman-coded.
    codes_only = (fixed.nnz + fixed.fillers) * fixed.index_bits + _huffman_bits(code_counts)
    row = {
        "layer": name,
        "shape": f"{matrix.shape[0]}x{matrix.shape[1]}",
        "density": round(matrix.density, 4),
        "bits": matrix.bits,
        "nnz": n,
        "entropy": (_entropy_bits(code_counts) + _entropy_bits(np.bincount(gaps))) / n,
        "codes_only": codes_only / n,
        "gaps_only": gaps_only / n,
        "separate": separate / n,
        "joint": joint / n,
        "fixed_gpu": fixed.bits_per_kept_weight(),
        "paper_ri": min(encode_relative(matrix, b).total_bits() for b in INDEX_BITS) / max(n, 1),
    }
    for suffix, kwargs in HUFFMAN_FORMS.items():
        layout = HuffmanLayout.from_matrix(matrix, **kwargs)
        row[f"huffman_gpu{suffix}"] = layout.bits_per_kept_weight()
        if not suffix:  # the default layout's lanes at batch 1, float16 (the loop's steps per iteration)
            steps = steps_granularity(launch_config(layout, 1, torch.float16).K)
            row["lane_utilization"] = layout.lane_utilization(steps)
    row["ratio"] = row["huffman_gpu"] / row["fixed_gpu"]
    row["ratio_least"] = row["huffman_gpu_least"] / row["fixed_gpu"]
    return {key: round(v, 3) if isinstance(v, float) else v for key, v in row.items()}


def gaussian_layer(name: str, bits: int, seed: int = 0) -> CompressedMatrix:
    """A paper layer's shape and density, weights drawn from a normal distribution, pruned by
    magnitude and shared by k-means with linear initialization (the paper's recipe, no training)."""
    spec = PAPER_LAYERS[name]
    weight = torch.randn(spec.outputs, spec.inputs, generator=torch.Generator().manual_seed(seed))
    return compress_matrix(weight, spec.weight_density, bits, init="linear", seed=seed, name=name)


def digits_layers(seed: int = 0) -> dict[str, CompressedMatrix]:
    """The trained, pruned and shared LeNet-300-100 layers of `dcomp demo` (one seed)."""
    from workloads.digits import DEMO_CONFIG, DEMO_SCHEDULE, compress_digits, load_digits_split

    return compress_digits(load_digits_split(), DEMO_CONFIG, DEMO_SCHEDULE, seed).layers


def plot(rows: list[dict], path: Path) -> Path | None:
    """Bits of each coding relative to the fixed-width GPU layout, per layer, with the 0.85 target."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = ["entropy", "joint", "paper_ri", *(f"huffman_gpu{s}" for s in HUFFMAN_FORMS)]
    labels = [f"{r['layer']} {r['bits']}b" for r in rows]
    top = 1.2
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 0.45), 4.5))
    width = 0.8 / len(series)
    for i, key in enumerate(series):
        ratios = np.array([r[key] / r["fixed_gpu"] for r in rows])
        x = np.arange(len(rows)) + i * width
        ax.bar(x, np.minimum(ratios, top), width, label=key)
        for xi, ratio in zip(x[ratios > top], ratios[ratios > top]):
            ax.text(xi, top, f"{ratio:.2f}", rotation=90, fontsize=6, ha="center", va="top")
    ax.axhline(0.85, color="black", linestyle="--", linewidth=0.8, label="0.85 target")
    ax.axhline(1.0, color="grey", linewidth=0.6)
    ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, labels, fontsize=6, rotation=70, ha="right")
    ax.set_ylim(0.5, top)
    ax.set_ylabel("bits / fixed-width GPU layout's bits")
    ax.set_title("Huffman GPU form vs fixed-width layout: random, Gaussian-shared, EIE dump, digits")
    ax.legend(fontsize=7, ncol=len(series) + 1, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("--out", default="perf/results/huffman_bits", help="output directory")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 5])
    parser.add_argument("--layers", nargs="+", default=list(PAPER_LAYERS), choices=list(PAPER_LAYERS))
    parser.add_argument("--gaussian", action="store_true", help="also layers shared from Gaussian weights")
    parser.add_argument(
        "--dump",
        type=Path,
        default=os.environ.get(EIE_DUMP_VARIABLE),
        help=f"an EIE authors' dump folder (default: ${EIE_DUMP_VARIABLE}; none: no dump row)",
    )
    parser.add_argument("--digits", action="store_true", help="also the trained digits demo layers")
    args = parser.parse_args(argv)
    if args.dump is not None and not Path(args.dump).is_dir():
        parser.error(f"--dump {args.dump}: no such folder")
    start = time.perf_counter()
    rows = []
    kinds = [("random", lambda name, bits: PAPER_LAYERS[name].random_matrix(bits, seed=0))]
    if args.gaussian:
        kinds.append(("gaussian", gaussian_layer))
    for kind, build in kinds:
        for bits in args.bits:
            for name in args.layers:
                label = name if kind == "random" else f"{name}-{kind}"
                rows.append(measure(label, build(name, bits)))
                print(f"[{time.perf_counter() - start:5.1f}s] {label} {bits}b", file=sys.stderr, flush=True)
    if args.dump is not None:
        dump = Path(args.dump)
        rows.append(measure(f"eie-dump-{dump.name}", read_eie_dump(dump).matrix))
    if args.digits:
        print("training the digits demo network (one seed)...", file=sys.stderr, flush=True)
        for name, matrix in digits_layers().items():
            rows.append(measure(f"digits-{name}", matrix))
    out = Path(args.out)
    write_csv(out / "huffman_bits.csv", rows, machine_info())
    plot(rows, out / "huffman_bits.png")
    columns = ["layer", "bits", "density", "entropy", "codes_only", "gaps_only", "separate", "joint"]
    forms = [f"huffman_gpu{s}" for s in HUFFMAN_FORMS]
    print_table(rows, [*columns, *forms, "fixed_gpu", "paper_ri", "ratio", "ratio_least", "lane_utilization"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
