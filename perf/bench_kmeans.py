"""Speed of the per-layer 1-D k-means (``compress.kmeans_1d``) on one CPU process.

Measurements in one run:

* side by side on the same values and the same number of Lloyd iterations: the library's
  k-means (sorted values and prefix sums, the small-layer path) against a textbook O(n k) Lloyd
  (distances of every value to every centroid, chunked), printing the speed-up;
* side by side to convergence on the same values: the large-layer path (histogram, Newton steps,
  exact finish near the midpoints) against the sorted exact path forced on the same layer
  (sort, plain Lloyd, bisection), printing the speed-up and the ratio of the inertias;
* the full ``kmeans_1d`` on up to 100M values (Gaussian, like a trained FC layer);
* ``compress_matrix`` (magnitude pruning to 4% + 5-bit k-means) of a VGG-6-sized layer
  (4096 x 25088 = 103M weights), the paper's largest FC layer.

Writes ``bench_kmeans.csv`` into ``--out``; the 1-minute load average is in the CSV (other jobs on
the machine slow every number down).

    python -m perf.bench_kmeans [--sizes 1e6 1e7 1e8] [--bits 5 8] [--textbook-size 1e6]
                                [--compare-size 1e7] [--no-layer] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest import mock

import numpy as np

from compress import kmeans
from compress.kmeans import kmeans_1d
from compress.one_shot import compress_matrix
from perf.harness import doc_summary, load_average, machine_info, print_table, write_csv
from workloads.paper_layers import PAPER_LAYERS

SIDE_BY_SIDE_ITERATIONS = 20


def naive_lloyd(values: np.ndarray, bits: int, iterations: int) -> np.ndarray:
    """Textbook Lloyd with the linear init: O(n k) distances per iteration."""
    centroids = np.linspace(values.min(), values.max(), 1 << bits)
    for _ in range(iterations):
        codes = np.empty(values.size, dtype=np.int64)
        for lo in range(0, values.size, 1 << 16):
            chunk = values[lo : lo + (1 << 16), None]
            codes[lo : lo + (1 << 16)] = np.argmin(np.abs(chunk - centroids[None, :]), axis=1)
        counts = np.bincount(codes, minlength=centroids.size)
        sums = np.bincount(codes, weights=values, minlength=centroids.size)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    return centroids


def sorted_exact_kmeans(values: np.ndarray, bits: int) -> kmeans.KMeansResult:
    """``kmeans_1d`` with its small-layer path forced: sort, plain Lloyd on the sorted values."""
    with mock.patch.object(kmeans, "_EXACT_MAX", values.size):
        return kmeans_1d(values, bits)


def _timed(fn, *args, **kwargs):
    """(seconds, result) of one call: a 100M-value run is too long to repeat."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def _record(rows: list[dict], row: dict) -> None:
    """Append ``row`` with the load average at its end, and print it at once."""
    row["load_avg_1min"] = load_average()
    rows.append(row)
    print_table([row], list(row))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_kmeans", description=doc_summary(__doc__))
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7, 1e8], help="k-means inputs")
    parser.add_argument("--bits", type=int, nargs="+", default=[5, 8])
    parser.add_argument(
        "--textbook-size", type=float, default=1e6, help="values of the comparison with textbook Lloyd"
    )
    parser.add_argument(
        "--compare-size", type=float, default=1e7, help="values of the histogram vs sorted comparison"
    )
    parser.add_argument("--no-layer", action="store_true", help="skip the VGG-6-sized compress_matrix run")
    parser.add_argument("--out", type=Path, default=Path("out/bench_kmeans"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows: list[dict] = []

    values = rng.normal(0, 0.05, int(args.textbook_size)).astype(np.float32)
    for bits in args.bits:
        ours, _ = _timed(kmeans_1d, values, bits, max_iter=SIDE_BY_SIDE_ITERATIONS, tol=0.0)
        naive, _ = _timed(naive_lloyd, values, bits, SIDE_BY_SIDE_ITERATIONS)
        _record(
            rows,
            {
                "case": f"{SIDE_BY_SIDE_ITERATIONS} iterations vs textbook O(nk) Lloyd",
                "values": values.size,
                "bits": bits,
                "seconds": ours,
                "other_seconds": naive,
                "speedup": naive / ours,
            },
        )

    values = rng.normal(0, 0.05, int(args.compare_size)).astype(np.float32)
    for bits in args.bits:
        ours, result = _timed(kmeans_1d, values, bits)
        exact, reference = _timed(sorted_exact_kmeans, values, bits)
        _record(
            rows,
            {
                "case": "to convergence vs sorted exact path",
                "values": values.size,
                "bits": bits,
                "seconds": ours,
                "other_seconds": exact,
                "speedup": exact / ours,
                "iterations": result.iterations,
                "other_iterations": reference.iterations,
                "inertia_ratio": result.inertia / reference.inertia,
            },
        )

    for size in (int(s) for s in args.sizes):
        values = rng.normal(0, 0.05, size).astype(np.float32)
        for bits in args.bits:
            seconds, result = _timed(kmeans_1d, values, bits)
            _record(
                rows,
                {
                    "case": "to convergence",
                    "values": size,
                    "bits": bits,
                    "seconds": seconds,
                    "iterations": result.iterations,
                    "converged": result.converged,
                },
            )
    del values
    if not args.no_layer:
        vgg6 = PAPER_LAYERS["vgg6"]
        weight = rng.normal(0, 0.01, (vgg6.outputs, vgg6.inputs)).astype(np.float32)
        seconds, _ = _timed(compress_matrix, weight, density=vgg6.weight_density, bits=5)
        _record(
            rows,
            {
                "case": "compress_matrix vgg6 (prune 4% + k-means)",
                "values": weight.size,
                "bits": 5,
                "seconds": seconds,
            },
        )
    columns = [
        "case",
        "values",
        "bits",
        "seconds",
        "other_seconds",
        "speedup",
        "iterations",
        "other_iterations",
        "inertia_ratio",
        "converged",
        "load_avg_1min",
    ]
    print()
    print_table(rows, columns)
    path = write_csv(args.out / "bench_kmeans.csv", rows, machine_info())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
