"""Per-layer 1-D k-means for weight sharing (the paper's trained quantization, stage 2).

Fast because the data is one-dimensional: the values are sorted once, a cluster is then a
contiguous run of the sorted values whose ends are found by bisecting the centroid midpoints
(``searchsorted``), and every cluster mean (and squared error) comes from two reads of a prefix
sum. Memory: about 20 bytes per value (the sorted copy and two float64 prefix sums). Lloyd
needs hundreds to thousands of such steps on smooth weight distributions; for large layers
most of them run on a 1M-value quantile sample of the sorted values, and the full data
continues from there to its own fixed point. One Lloyd
iteration therefore costs O(k log n), not O(n k); the O(n log n) sort and one O(n log k)
assignment pass dominate.

Behaviour at the edges (documented, tested):

* fewer distinct values than ``2**bits`` clusters (a constant layer is the extreme case): the
  codebook is exactly the distinct values and every weight is reproduced exactly;
* an empty cluster (common with the linear init on pruned, bimodal weights: centroids start in
  the pruned gap) is moved onto the value farthest from its centroid in the cluster of largest
  squared error, so all ``2**bits`` centroids get used whenever there are enough distinct values;
* the returned codebook is sorted ascending and holds only centroids that at least one value
  uses, so it may be shorter than ``2**bits`` (then fewer codebook bytes are stored);
* NaN or inf raise :class:`NonFiniteWeightError`, an empty input :class:`EmptyLayerError`,
  both naming the layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.errors import ConfigError, EmptyLayerError, NonFiniteWeightError
from compress.matrix import check_bits

INITS = ("linear", "density", "random")
# Values are processed in chunks so that the work arrays stay small for 100M-value layers.
_CHUNK = 1 << 22
# Layers above 4x this many values first iterate on a quantile sample of this size.
_SAMPLE = 1 << 20


@dataclass(frozen=True)
class KMeansResult:
    """Shared weights of one layer: ``codebook[codes]`` approximates the input values."""

    codebook: np.ndarray  # float32[k'], sorted ascending, k' <= 2**bits, every entry used
    codes: np.ndarray  # uint8[n], index into codebook of each input value (input order)
    iterations: int  # Lloyd iterations run
    converged: bool  # the partition stopped changing before max_iter
    inertia: float  # sum of squared distances of the values to their centroids


def check_init(init: str) -> str:
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    return init


def kmeans_1d(
    values,
    bits: int,
    *,
    init: str = "linear",
    seed: int = 0,
    max_iter: int = 10_000,
    tol: float = 1e-6,
    name: str = "weights",
) -> KMeansResult:
    """Cluster 1-D ``values`` into at most ``2**bits`` shared values (Lloyd's algorithm).

    ``init``: ``"linear"`` (evenly spaced between min and max, the paper's best and the default),
    ``"density"`` (quantiles of the values) or ``"random"`` (Forgy: distinct random values,
    drawn with ``seed``). Iterations stop when the partition no longer changes or no centroid
    moves by more than ``tol`` times the value range. The result is deterministic for given
    inputs and seed. ``name`` is the layer named in error messages.
    """
    bits = check_bits(bits)
    check_init(init)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ConfigError(f"max_iter must be a non-negative int, got {max_iter!r}")
    flat = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
    n = flat.size
    if n == 0:
        raise EmptyLayerError(f"layer {name!r}: no values to cluster")
    ordered = np.sort(flat)
    # After sorting, -inf sits first and +inf/NaN sit last: two reads check the whole layer.
    if not (np.isfinite(ordered[0]) and np.isfinite(ordered[-1])):
        bad = int(np.count_nonzero(~np.isfinite(flat)))
        raise NonFiniteWeightError(
            f"layer {name!r}: {bad} of {n} values are NaN or inf (e.g. {flat[~np.isfinite(flat)][0]})"
        )
    k = 1 << bits
    if np.count_nonzero(ordered[1:] != ordered[:-1]) < k:  # at most k distinct values
        distinct = _distinct(ordered)
        return KMeansResult(distinct, _assign(flat, distinct), 0, True, 0.0)

    centroids = _initial_centroids(ordered, k, init, np.random.default_rng(seed))
    span = float(ordered[-1]) - float(ordered[0])
    iterations = 0
    if n > 4 * _SAMPLE:
        # Warm start on an evenly strided sample of the sorted values (a quantile sample): most of
        # Lloyd's many small steps run on 1M values, the full data only finishes the job.
        sample = _SortedValues(np.ascontiguousarray(ordered[:: n // _SAMPLE]))
        centroids, iterations, _ = sample.lloyd(centroids, max_iter, tol * span)
    full = _SortedValues(ordered)
    centroids, more, converged = full.lloyd(centroids, max_iter, tol * span)
    codebook = np.unique(centroids.astype(np.float32))
    ends = np.searchsorted(ordered, _midpoints_below(codebook), side="right")
    codebook = codebook[np.diff(np.concatenate(([0], ends, [n]))) > 0]
    codes = _assign(flat, codebook)
    return KMeansResult(codebook, codes, iterations + more, converged, full.inertia(codebook))


class _SortedValues:
    """Sorted values with float64 prefix sums of the values and their squares: the sum and the
    squared error of any contiguous run (a 1-D cluster) in O(1)."""

    def __init__(self, ordered: np.ndarray) -> None:
        self.values = ordered
        self.prefix = _prefix_sum(ordered, square=False)
        self.prefix_sq = _prefix_sum(ordered, square=True)

    def runs(self, sorted_centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (exclusive) of each centroid's cluster in the sorted values."""
        inner = np.searchsorted(self.values, _midpoints_below(sorted_centroids), side="right")
        return np.concatenate(([0], inner)), np.concatenate((inner, [self.values.size]))

    def lloyd(self, centroids: np.ndarray, max_iter: int, max_shift: float) -> tuple[np.ndarray, int, bool]:
        """Lloyd iterations from sorted ``centroids``; stops when the partition repeats or no
        centroid moves more than ``max_shift``. Returns (centroids, iterations, converged)."""
        previous = None
        for iteration in range(1, max_iter + 1):
            start, end = self.runs(centroids)
            if previous is not None and np.array_equal(end, previous):
                return centroids, iteration - 1, True
            previous = end
            counts = end - start
            sums = self.prefix[end] - self.prefix[start]
            updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            if not counts.all():
                self._relocate_empty(updated, counts, sums, start, end)
            updated = np.sort(updated)
            shift = float(np.max(np.abs(updated - centroids)))
            centroids = updated
            if shift <= max_shift:
                return centroids, iteration, True
        return centroids, max_iter, False

    def _relocate_empty(self, centroids, counts, sums, start, end) -> None:
        """Move each empty cluster's centroid onto the value farthest from its centroid in the
        cluster of largest squared error (as scikit-learn does), in place; that value then
        belongs to it, so the inertia drops and no centroid is wasted."""
        occupied = counts > 0
        error = np.zeros(counts.size)
        error[occupied] = (self.prefix_sq[end] - self.prefix_sq[start] - sums**2 / np.maximum(counts, 1))[
            occupied
        ]
        for empty in np.flatnonzero(~occupied):
            donor = int(np.argmax(error))
            if error[donor] <= 0:
                return
            low, high = float(self.values[start[donor]]), float(self.values[end[donor] - 1])
            mean = centroids[donor]
            centroids[empty] = low if mean - low > high - mean else high
            error[donor] = 0.0

    def inertia(self, codebook: np.ndarray) -> float:
        """Sum of squared distances of the values to their nearest entry of ``codebook``."""
        start, end = self.runs(codebook)
        c = codebook.astype(np.float64)
        total = (
            (self.prefix_sq[end] - self.prefix_sq[start])
            - 2 * c * (self.prefix[end] - self.prefix[start])
            + (end - start) * c**2
        )
        return max(0.0, float(total.sum()))


def _prefix_sum(values: np.ndarray, *, square: bool) -> np.ndarray:
    """float64 prefix sum (leading 0) of the values or their squares, in chunks (no n-sized
    float64 temporary)."""
    out = np.empty(values.size + 1, dtype=np.float64)
    out[0] = 0.0
    for lo in range(0, values.size, _CHUNK):
        chunk = values[lo : lo + _CHUNK]
        if square:
            chunk = np.square(chunk, dtype=np.float64)
        target = out[lo + 1 : lo + 1 + chunk.size]
        np.cumsum(chunk, dtype=np.float64, out=target)
        target += out[lo]
    return out


def _initial_centroids(ordered: np.ndarray, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    n = ordered.size
    if init == "linear":
        return np.linspace(float(ordered[0]), float(ordered[-1]), k)
    if init == "density":
        # The value at the middle of each of k equal slices of the CDF.
        positions = ((np.arange(k) + 0.5) * n / k).astype(np.int64)
        return ordered[positions].astype(np.float64)
    # Forgy over the distinct values (more than k exist here), so no two centroids coincide.
    distinct = _distinct(ordered)
    return np.sort(distinct[rng.choice(distinct.size, size=k, replace=False)]).astype(np.float64)


def _distinct(ordered: np.ndarray) -> np.ndarray:
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def _midpoints_below(sorted_centroids: np.ndarray) -> np.ndarray:
    """float32 midpoints m32 of float64 centroids with ``v > m32`` iff ``v > m64`` for float32 v.

    Comparing float32 values against float32 bounds avoids converting all values to float64;
    rounding each midpoint down to the nearest float32 keeps the comparison exact.
    """
    centroids = np.asarray(sorted_centroids, dtype=np.float64)
    exact = (centroids[1:] + centroids[:-1]) / 2
    rounded = exact.astype(np.float32)
    too_high = rounded.astype(np.float64) > exact
    rounded[too_high] = np.nextafter(rounded[too_high], np.float32(-np.inf))
    return rounded


def _assign(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest centroid of each value (ties to the lower one, as ``nearest_centroid``);
    ``codebook`` is sorted ascending."""
    bounds = _midpoints_below(codebook)
    codes = np.empty(values.size, dtype=np.uint8)
    for lo in range(0, values.size, _CHUNK):
        codes[lo : lo + _CHUNK] = np.searchsorted(bounds, values[lo : lo + _CHUNK], side="left")
    return codes
