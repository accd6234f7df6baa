"""Huffman codec on one CPU core: encode and decode rates, bits per symbol against the entropy.

Streams of the paper's largest FC layer, VGG-6 (4096 x 25088, 4% kept; ``--scale`` shrinks the
rows), with 5-bit codes and 5-bit relative indices:

* ``codes_uniform``: the codes of a random layer (uniform over 32 codes: nothing to gain, a pure
  speed test);
* ``codes_kmeans``: 5-bit k-means codes (linear init) of the kept weights of a magnitude-pruned
  Gaussian layer, whose peaked code usage is what trained layers show;
* ``z``: the relative-index stream of the random layer (fillers included).

Each stream is encoded and decoded with several segment sizes, pinned to one core. Rates come
from the median call and from the fastest tenth of the calls (``perf.harness.time_cpu``; the
latter is closer to the uncontended rate on a shared machine). Prints a table and writes
``bench_codec.csv`` and ``bench_codec.png`` into ``--out``.

    python -m perf.bench_codec [--scale 1.0] [--segments 256 1024 4096] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from compress.huffman import HuffmanCode, huffman_decode, huffman_encode
from compress.kmeans import kmeans_1d
from compress.relative_index import encode_relative
from compress.relative_index_huffman import encode_huffman
from perf.harness import REPO_ROOT, doc_summary, machine_info, print_table, time_cpu, write_csv
from workloads.paper_layers import PAPER_LAYERS
from workloads.synthetic import random_compressed_matrix

BITS = 5
INDEX_BITS = 5
COLUMNS = (
    "stream",
    "segment_symbols",
    "symbols",
    "encode_msym_s",
    "decode_msym_s",
    "encode_best_msym_s",
    "decode_best_msym_s",
    "entropy_bits",
    "payload_bits",
    "stored_bits",
    "overhead_bits",
)


def pruned_gaussian_tail(n: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of a standard normal conditioned on ``|x| > t``, where ``t`` keeps ``density``
    (the kept weights of magnitude pruning). Rejection sampling from a shifted exponential."""
    t = float(np.quantile(np.abs(rng.standard_normal(1_000_000)), 1.0 - density))
    out = np.empty(0)
    while out.size < n:
        y = t + rng.exponential(1.0 / t, size=int((n - out.size) * 1.3) + 16)
        out = np.concatenate((out, y[rng.random(y.size) < np.exp(-0.5 * (y - t) ** 2)]))
    return (out[:n] * rng.choice([-1.0, 1.0], size=n)).astype(np.float32)


def entropy_bits(symbols: np.ndarray, alphabet: int) -> float:
    p = np.bincount(symbols, minlength=alphabet) / max(symbols.size, 1)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def streams(scale: float, seed: int = 0) -> dict[str, tuple[np.ndarray, int]]:
    spec = PAPER_LAYERS["vgg6"]
    rows = max(1, round(spec.outputs * scale))
    matrix = random_compressed_matrix(rows, spec.inputs, spec.weight_density, BITS, seed=seed)
    relative = encode_relative(matrix, INDEX_BITS)
    real = relative.z != (1 << INDEX_BITS) - 1
    kept = pruned_gaussian_tail(matrix.nnz, spec.weight_density, np.random.default_rng(seed))
    kmeans_codes = kmeans_1d(kept, BITS, init="linear").codes
    huffman_bits = encode_huffman(relative).total_bits()
    print(
        f"VGG-6 layer ({rows} x {spec.inputs}, {matrix.nnz} kept, {relative.fillers} fillers at "
        f"index_bits={INDEX_BITS}); whole layer, bits per kept weight: fixed width "
        f"{relative.total_bits() / matrix.nnz:.3f}, Huffman {huffman_bits / matrix.nnz:.3f}"
    )
    return {
        "codes_uniform": (np.ascontiguousarray(relative.codes[real]), 1 << BITS),
        "codes_kmeans": (kmeans_codes, 1 << BITS),
        "z": (np.ascontiguousarray(relative.z), 1 << INDEX_BITS),
    }


def measure(name: str, symbols: np.ndarray, alphabet: int, segment: int) -> dict:
    code = HuffmanCode.from_symbols(symbols, alphabet)
    stream = huffman_encode(symbols, alphabet, code=code, segment_symbols=segment)
    if not np.array_equal(huffman_decode(stream), symbols):
        raise AssertionError(f"{name}: round trip failed")
    encode = time_cpu(
        lambda: huffman_encode(symbols, alphabet, code=code, segment_symbols=segment), warmup=1, repeat=10
    )
    decode = time_cpu(lambda: huffman_decode(stream), warmup=1, repeat=10)
    n = symbols.size
    return {
        "stream": name,
        "segment_symbols": segment,
        "symbols": n,
        "encode_msym_s": n / encode.median / 1e6,
        "decode_msym_s": n / decode.median / 1e6,
        # The fastest tenth: closer to the uncontended rate on a shared machine.
        "encode_best_msym_s": n / encode.low / 1e6,
        "decode_best_msym_s": n / decode.low / 1e6,
        "entropy_bits": entropy_bits(symbols, alphabet),
        "payload_bits": stream.total_bits / n,
        "stored_bits": stream.total_bits_stored() / n,
        "overhead_bits": stream.overhead_bits() / n,
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, bits) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["stream"] for r in rows):
        mine = [r for r in rows if r["stream"] == name]
        segments = [r["segment_symbols"] for r in mine]
        rates.plot(segments, [r["decode_msym_s"] for r in mine], "o-", label=f"{name} decode")
        rates.plot(segments, [r["encode_msym_s"] for r in mine], "s--", label=f"{name} encode")
        (line,) = bits.plot(segments, [r["stored_bits"] for r in mine], "o-", label=f"{name} stored")
        bits.axhline(mine[0]["entropy_bits"], linestyle=":", color=line.get_color())
    for axes in (rates, bits):
        axes.set_xscale("log")
        axes.set_xticks(segments, [str(s) for s in segments], minor=False)
        axes.minorticks_off()
    rates.set(xlabel="segment symbols", ylabel="M symbols/s (one core)", title="rates")
    rates.axhline(20, color="grey", linewidth=0.8)
    bits.set(
        xscale="log",
        xlabel="segment symbols",
        ylabel="bits per symbol",
        title="stored bits (dotted: entropy)",
    )
    rates.legend(fontsize=7)
    bits.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("--scale", type=float, default=1.0, help="share of VGG-6's 4096 rows (default 1)")
    parser.add_argument("--segments", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "results" / "codec_cpu")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})  # one core; restored below (tests call main)
    try:
        start = time.perf_counter()
        rows = []
        for name, (symbols, alphabet) in streams(args.scale).items():
            for segment in args.segments:
                rows.append(measure(name, symbols, alphabet, segment))
                print(
                    f"  {name} segments of {segment}: done ({time.perf_counter() - start:.0f} s)", flush=True
                )
    finally:
        if pinned:
            os.sched_setaffinity(0, cores)
    print_table(rows, COLUMNS)
    info = machine_info()
    info["cores_used"] = "1"
    path = write_csv(args.out / "bench_codec.csv", rows, info)
    if not args.no_plot:
        plot(rows, args.out / "bench_codec.png")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
