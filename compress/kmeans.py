"""Per-layer 1-D k-means for weight sharing (the paper's trained quantization, stage 2).

Fast because the data is one-dimensional: the values are sorted once, a cluster is then a
contiguous run of the sorted values whose ends are found by bisecting the centroid midpoints
(``searchsorted``), and every cluster mean (and squared error) comes from two reads of a prefix
sum. Memory: about 20 bytes per value (the sorted copy and two float64 prefix sums). One Lloyd
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
# Values are assigned in chunks so that the float64 work arrays stay small for 100M-value layers.
_CHUNK = 1 << 22


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
    distinct = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    if distinct.size <= k:
        codes, inertia = _assign(flat, distinct)
        return KMeansResult(distinct, codes, 0, True, inertia)

    centroids = _initial_centroids(ordered, distinct, k, init, np.random.default_rng(seed))
    prefix = np.zeros(n + 1, dtype=np.float64)
    np.cumsum(ordered, dtype=np.float64, out=prefix[1:])
    prefix_sq = np.zeros(n + 1, dtype=np.float64)
    np.cumsum(np.square(ordered, dtype=np.float64), out=prefix_sq[1:])
    span = float(ordered[-1]) - float(ordered[0])
    bounds = None
    converged = False
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        inner = np.searchsorted(ordered, _midpoints_below(centroids), side="right")
        if bounds is not None and np.array_equal(inner, bounds):
            converged = True
            break
        bounds = inner
        start = np.concatenate(([0], inner))
        end = np.concatenate((inner, [n]))
        counts = end - start
        sums = prefix[end] - prefix[start]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if not counts.all():
            _relocate_empty(updated, counts, sums, start, end, ordered, prefix_sq)
        updated = np.sort(updated)
        shift = float(np.max(np.abs(updated - centroids)))
        centroids = updated
        if shift <= tol * span:
            converged = True
            break
    codebook = np.unique(centroids.astype(np.float32))
    codes, inertia = _assign(flat, codebook)
    used = np.bincount(codes, minlength=codebook.size) > 0
    if not used.all():
        remap = np.cumsum(used) - 1
        codebook = codebook[used]
        codes = remap[codes].astype(np.uint8)
    return KMeansResult(codebook, codes, iterations, converged, inertia)


def _initial_centroids(
    ordered: np.ndarray, distinct: np.ndarray, k: int, init: str, rng: np.random.Generator
) -> np.ndarray:
    n = ordered.size
    if init == "linear":
        return np.linspace(float(ordered[0]), float(ordered[-1]), k)
    if init == "density":
        # The value at the middle of each of k equal slices of the CDF.
        positions = ((np.arange(k) + 0.5) * n / k).astype(np.int64)
        return ordered[positions].astype(np.float64)
    # Forgy over the distinct values (k of them exist here), so no two centroids coincide.
    return np.sort(distinct[rng.choice(distinct.size, size=k, replace=False)]).astype(np.float64)


def _relocate_empty(centroids, counts, sums, start, end, ordered, prefix_sq) -> None:
    """Move each empty cluster's centroid onto the value farthest from its centroid in the
    cluster of largest squared error (as scikit-learn does), in place; that value then belongs
    to it, so the inertia drops and no centroid is wasted."""
    occupied = counts > 0
    error = np.zeros(counts.size)
    error[occupied] = (prefix_sq[end] - prefix_sq[start])[occupied] - sums[occupied] ** 2 / counts[occupied]
    for empty in np.flatnonzero(~occupied):
        donor = int(np.argmax(error))
        if error[donor] <= 0:
            return
        low, high = float(ordered[start[donor]]), float(ordered[end[donor] - 1])
        mean = centroids[donor]
        centroids[empty] = low if mean - low > high - mean else high
        error[donor] = 0.0
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


def _assign(values: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, float]:
    """Nearest centroid of each value (ties to the lower one, as ``nearest_centroid``) and the
    inertia; ``codebook`` is sorted ascending."""
    bounds = _midpoints_below(codebook)
    codes = np.empty(values.size, dtype=np.uint8)
    inertia = 0.0
    for lo in range(0, values.size, _CHUNK):
        chunk = values[lo : lo + _CHUNK]
        slot = np.searchsorted(bounds, chunk, side="left")
        codes[lo : lo + _CHUNK] = slot
        error = chunk.astype(np.float64) - codebook[slot]
        inertia += float(np.dot(error, error))
    return codes, inertia
