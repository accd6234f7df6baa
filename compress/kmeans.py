"""Per-layer 1-D k-means for weight sharing (the paper's trained quantization, stage 2).

Fast because the data is one-dimensional: with the centroids sorted, a cluster is every value
between two centroid midpoints, so Lloyd's algorithm only needs, at each midpoint, the count,
sum and sum of squares of the values at or below it (cumulative statistics). Cluster means and
squared errors are differences of those; one iteration costs O(k log m) for m stored points,
never O(n k).

* Small layers (up to ``_EXACT_MAX`` values): the distinct values are sorted once with their
  multiplicities, and Lloyd runs on them exactly.
* Large layers: no sort. One pass bins the values into ``_BINS`` bins with exact float64
  count, sum and sum of squares per bin; the bins are log-spaced around the median (the top
  bits of the order-preserving integer key of ``v - median``), so heavy tails cost the bulk no
  resolution. Lloyd first runs on a stand-in for the values, each bin's values spread evenly
  around their mean with their variance (so that centroids move continuously, as on the
  values); once its steps are small, Newton steps on the distortion (its Hessian is tridiagonal
  in 1-D) finish the slow approach that takes Lloyd alone tens of thousands of iterations with
  8 bits (and stopping it early leaves the inertia several percent higher). Lloyd then
  continues on the values themselves to an exact fixed point. The bin of a value is a monotone
  function of it, so values in lower bins are never larger: every bin lies wholly in one
  cluster except the few holding a midpoint, and only the values of the bins around the
  midpoints are gathered and sorted (one more pass, repeated with a wider reach only if a
  midpoint drifts out of them), so the statistics are exact. The codes come from a per-bin
  table, with a bisection only for the values in bins that hold a midpoint. Cost: a few O(n)
  passes (min, max, histogram, gather, codes); memory: O(chunk + bins + gathered values).

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

import functools
from dataclasses import dataclass

import numpy as np

from compress.checks import check_int
from compress.errors import ConfigError, EmptyLayerError, NonFiniteWeightError
from compress.matrix import check_bits

INITS = ("linear", "density", "random")
# Values are processed in chunks so that the work arrays stay small for 100M-value layers.
_CHUNK = 1 << 22
# Layers of at most this many values are sorted and clustered directly.
_EXACT_MAX = 1 << 20
# Histogram bins of a large layer, a power of two (cluster statistics are exact whatever the
# number; finer bins make the histogram phase end nearer the values' fixed point).
_BINS = 1 << 20
# Values gathered around a midpoint for the exact phase: those within this share of the spacing
# of the midpoints there; doubled whenever a midpoint moves out of them, so a drifting exact
# phase gathers a few times at most.
_REACH = 0.01
# Newton steps only once Lloyd's steps are below this share of the value range, or after this
# many Lloyd iterations (tail centroids jumping between single values can keep the steps
# large): Lloyd's early steps choose the local optimum and Newton only hurries the slow
# approach. Newton from the start, or after 300 iterations, ended up to 0.4% worse than plain
# Lloyd in a few of 100 sampled layers; with these settings, never more than 0.02% worse.
_NEWTON_START = 3e-5
_NEWTON_AFTER = 1000
# Halvings of a Newton step before falling back to the Lloyd step.
_BACKTRACK = 4


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
    weights=None,
    name: str = "weights",
    clusters: int | None = None,
) -> KMeansResult:
    """Cluster 1-D ``values`` into at most ``2**bits`` shared values (Lloyd's algorithm), or at
    most ``clusters`` (1 .. 2**bits) when given.

    ``init``: ``"linear"`` (evenly spaced between min and max, the paper's best and the default),
    ``"density"`` (quantiles of the values) or ``"random"`` (Forgy: distinct random values,
    drawn with ``seed``; on large layers, means of distinct random histogram bins). Iterations
    stop when the partition no longer changes or no centroid moves by more than ``tol`` times
    the value range; ``max_iter`` bounds them (on large layers, separately for the histogram
    phase, where an iteration may be a Newton step, and for the exact phase). The result is
    deterministic for given inputs and seed. ``name`` is the layer named in error messages.

    ``weights`` (non-negative, one per value, not all zero) makes it weighted k-means: each value
    counts with its weight in the cluster means and the inertia, e.g. a sensitivity such as the
    second moment of the input a weight multiplies. Codes are still the nearest centroids.
    Weighted clustering always takes the exact (sorted) path, whatever the layer's size.
    """
    bits = check_bits(bits)
    check_init(init)
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise ConfigError(f"max_iter must be a non-negative int, got {max_iter!r}")
    flat = np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(-1))
    n = flat.size
    if n == 0:
        raise EmptyLayerError(f"layer {name!r}: no values to cluster")
    lo, hi = flat.min(), flat.max()  # NaN propagates into both
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(flat)
        raise NonFiniteWeightError(
            f"layer {name!r}: {int(np.count_nonzero(bad))} of {n} values are NaN or inf (e.g. {flat[bad][0]})"
        )
    k = 1 << bits
    if clusters is not None:
        k = check_int(clusters, "clusters (at most 2**bits)", 1, k)
    max_shift = tol * (float(hi) - float(lo))
    rng = np.random.default_rng(seed)
    if weights is not None or n <= _EXACT_MAX:
        if weights is None:
            distinct, multiplicity = np.unique(flat, return_counts=True)
        else:
            distinct, inverse = np.unique(flat, return_inverse=True)
            multiplicity = np.bincount(inverse, _check_weights(weights, n, name), minlength=distinct.size)
        assign = functools.partial(_bisect, flat)
        if distinct.size <= k:
            return KMeansResult(distinct, assign(distinct), 0, True, 0.0)
        exact = _Points(distinct, multiplicity, float(lo), float(hi))
        centroids = _initial_centroids(exact, k, init, rng)
        centroids, iterations, converged = _lloyd(exact, centroids, max_iter, max_shift)
    else:
        histogram = _Histogram(flat, lo, hi)
        assign = histogram.assign
        distinct = histogram.distinct(k)
        if distinct is not None:
            return KMeansResult(distinct, assign(distinct), 0, True, 0.0)
        # Most of the iterations run on the bins; the values only finish the job.
        centroids = _initial_centroids(histogram.points(), k, init, rng)
        centroids, coarse_iterations, _ = _lloyd(
            _Spread(histogram), centroids, max_iter, max_shift, accelerate=True
        )
        exact = _Gathered(histogram, _midpoints_below(centroids))
        centroids, iterations, converged = _lloyd(exact, centroids, max_iter, max_shift)
        iterations += coarse_iterations
    codebook = np.unique(centroids.astype(np.float32))
    codebook = codebook[exact.clusters(_midpoints_below(codebook))[0] > 0]
    inertia = max(0.0, _distortion(codebook.astype(np.float64), exact.clusters(_midpoints_below(codebook))))
    codes = assign(codebook)
    return KMeansResult(codebook, codes, iterations, converged, inertia)


class _Sorted:
    """Cumulative statistics over sorted ``values``: subclasses give the count, sum and sum of
    squares of the values at or below each float32 bound (``cumulative``) and in all
    (``totals``); Lloyd needs nothing else."""

    values: np.ndarray  # sorted; holds the values next to every bound last passed to cumulative
    lo: float  # smallest value
    hi: float  # largest value

    def cumulative(self, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def totals(self) -> tuple[float, ...]:
        raise NotImplementedError

    def clusters(self, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        """Count, sum and sum of squares of each cluster between consecutive ``bounds``."""
        return tuple(
            np.diff(np.concatenate(([0], below, [total])))
            for below, total in zip(self.cumulative(bounds), self.totals(), strict=True)
        )

    def cluster_ends(self, bounds: np.ndarray, cluster: int) -> tuple[float, float]:
        """Smallest and largest value of a non-empty cluster (``bounds`` as last passed to
        :meth:`cumulative`)."""
        values = self.values
        low = self.lo if cluster == 0 else values[np.searchsorted(values, bounds[cluster - 1], "right")]
        high = (
            self.hi
            if cluster == bounds.size
            else values[np.searchsorted(values, bounds[cluster], "right") - 1]
        )
        return float(low), float(high)


class _Points(_Sorted):
    """Sorted distinct points with a multiplicity, sum and sum of squares each (the values
    themselves, or histogram bins standing at their means): cumulative statistics at any
    bound from one bisection and three reads of prefix sums."""

    def __init__(self, points, counts, lo: float, hi: float, sums=None, squares=None) -> None:
        self.values = points
        self.lo, self.hi = lo, hi
        wide = points.astype(np.float64)
        sums = wide * counts if sums is None else sums
        squares = wide * wide * counts if squares is None else squares
        self.prefix = _prefix_sums(counts, sums, squares)

    def cumulative(self, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        ends = np.searchsorted(self.values, bounds, side="right")
        return tuple(p[ends] for p in self.prefix)

    def totals(self) -> tuple[float, ...]:
        return tuple(p[-1] for p in self.prefix)


class _Histogram:
    """Bins of a large layer with exact per-bin statistics; bins are log-spaced around a centre.

    A value's bin is the top ``log2(_BINS)`` bits of the order-preserving integer key of its
    float32 distance to the centre (the median of a strided sample): with 2**20 bins, 2**11 bins
    per power of two, so the bins are as fine relative to the distance from the centre wherever
    the values lie, and far outliers (heavy tails) cost no resolution in the bulk. Subtracting
    the centre rounds monotonically and the key preserves order, so a value in a lower bin is
    never larger than one in a higher bin (equal values share a bin), and a value in another bin
    than a threshold's lies on the side of the threshold its bin says.
    """

    def __init__(self, values: np.ndarray, lo: np.float32, hi: np.float32) -> None:
        self.values = values
        self.lo, self.hi = lo, hi
        self.center = np.float32(np.median(values[:: max(1, values.size // 1024)]))
        self.shift = 32 - (_BINS.bit_length() - 1)  # key bits below the bin
        counts = np.zeros(_BINS, dtype=np.int64)
        sums = np.zeros(_BINS)
        squares = np.zeros(_BINS)
        for chunk in self.chunks():
            index = self.bin_of(chunk)
            counts += np.bincount(index, minlength=_BINS)
            wide = chunk.astype(np.float64)
            sums += np.bincount(index, wide, minlength=_BINS)
            wide *= wide
            squares += np.bincount(index, wide, minlength=_BINS)
        self.counts, self.sums, self.squares = counts, sums, squares
        self.occupied = np.flatnonzero(counts)
        self.prefix = _prefix_sums(counts, sums, squares)

    def edges(self) -> np.ndarray:
        """Approximate lower end of each bin and the upper end of the last (within [lo, hi])."""
        key = (np.arange(_BINS + 1, dtype=np.int64) - (_BINS >> 1)) << self.shift
        key = np.clip(key, -(1 << 31), (1 << 31) - 1).astype(np.int32)
        key ^= (key >> 31) & np.int32(0x7FFFFFFF)  # the key map is its own inverse
        with np.errstate(invalid="ignore", over="ignore"):
            edges = self.center.astype(np.float64) + key.view(np.float32).astype(np.float64)
        # Keys beyond those of -inf and inf are NaN patterns: no value lies there.
        half = _BINS >> 1
        edges[:half][np.isnan(edges[:half])] = -np.inf
        edges[half:][np.isnan(edges[half:])] = np.inf
        return np.clip(edges, float(self.lo), float(self.hi))

    def chunks(self):
        return (self.values[lo : lo + _CHUNK] for lo in range(0, self.values.size, _CHUNK))

    def bin_of(self, values: np.ndarray) -> np.ndarray:
        distance = np.subtract(values, self.center, dtype=np.float32)
        distance += np.float32(0.0)  # -0.0 (a -0.0 value minus a +0.0 centre) to +0.0: equal values, one bin
        key = distance.view(np.int32)
        key ^= (key >> 31) & np.int32(0x7FFFFFFF)  # negative floats: larger magnitude, smaller key
        key >>= self.shift
        return key.astype(np.intp) + (_BINS >> 1)

    def points(self) -> _Points:
        """The occupied bins as points at their means (strictly increasing: bins are ordered)."""
        occupied = self.occupied
        counts = self.counts[occupied]
        means = self.sums[occupied] / counts
        return _Points(
            means, counts, float(self.lo), float(self.hi), self.sums[occupied], self.squares[occupied]
        )

    def distinct(self, limit: int) -> np.ndarray | None:
        """The sorted distinct values if there are at most ``limit`` of them, else None.

        Only when at most ``limit`` bins are occupied: a representative value per bin, plus any
        value differing from its bin's representative."""
        if self.occupied.size > limit:
            return None
        representative = np.zeros(_BINS, dtype=np.float32)
        for chunk in self.chunks():
            representative[self.bin_of(chunk)] = chunk
        distinct = representative[self.occupied]
        for chunk in self.chunks():
            distinct = np.union1d(distinct, chunk[chunk != representative[self.bin_of(chunk)]])
            if distinct.size > limit:
                return None
        return distinct

    def assign(self, codebook: np.ndarray) -> np.ndarray:
        """Nearest entry of the sorted ``codebook`` for every value (as :func:`_bisect`): read
        off a per-bin table, bisecting only the values in bins that hold a midpoint."""
        bounds = _midpoints_below(codebook)
        split = self.bin_of(bounds)
        table = np.searchsorted(split, np.arange(_BINS), side="left").astype(np.uint8)
        straddles = np.zeros(_BINS, dtype=bool)
        straddles[split] = True
        codes = np.empty(self.values.size, dtype=np.uint8)
        for lo, chunk in zip(range(0, self.values.size, _CHUNK), self.chunks(), strict=True):
            index = self.bin_of(chunk)
            out = codes[lo : lo + chunk.size]
            np.take(table, index, out=out)
            fix = np.flatnonzero(straddles[index])
            out[fix] = np.searchsorted(bounds, chunk[fix], side="left")
        return codes


class _Spread(_Sorted):
    """Lloyd's stand-in for a large layer's values: each bin's values spread evenly over an
    interval centred on their exact mean, as wide as gives their exact variance (clipped to the
    bin). A genuine distribution, so Lloyd steps never raise its distortion, which Newton steps
    are judged by; its bin counts and sums are exact, and so are the sums of squares unless
    clipped; a bin of one value stays a point, so the sparse tails are modelled exactly.

    Centroids then move continuously, as on the values themselves; with each bin as one point,
    Lloyd would stop at a partition of whole bins far from the values' fixed point (hundreds of
    bins away with 8 bits, where each step moves the centroids by a fraction of a bin)."""

    def __init__(self, histogram: _Histogram) -> None:
        self.histogram = histogram
        self.lo, self.hi = float(histogram.lo), float(histogram.hi)
        self.edges = histogram.edges()
        counts, sums = histogram.counts, histogram.sums
        means = np.divide(sums, counts, out=self.edges[:-1].copy(), where=counts > 0)
        spread = np.divide(histogram.squares, counts, out=np.zeros(_BINS), where=counts > 0) - means**2
        # Half-width of the uniform of the bin's variance (a lone value stays a point), within the
        # bin; rounding may put a mean a hair outside its bin's approximate edges: no spread then.
        half = np.sqrt(3 * np.maximum(spread, 0.0))
        half = np.maximum(0.0, np.minimum(half, np.minimum(means - self.edges[:-1], self.edges[1:] - means)))
        self.counts, self.starts, self.widths = counts, means - half, 2 * half
        self.prefix = _prefix_sums(counts, sums, counts * (means**2 + half**2 / 3))

    def cumulative(self, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        bound = np.asarray(bounds, dtype=np.float64)
        split = np.clip(np.searchsorted(self.edges, bound, side="right") - 1, 0, _BINS - 1)
        count, start, width = self.counts[split], self.starts[split], self.widths[split]
        covered = np.clip(bound - start, 0.0, width)  # the part of the bound's bin's spread below it
        share = np.divide(covered, width, out=(bound >= start).astype(np.float64), where=width > 0)
        part = count * share
        whole_count, whole_sum, whole_square = (p[split] for p in self.prefix)
        return (
            whole_count + part,
            whole_sum + part * (start + covered / 2),
            whole_square + part * (start**2 + start * covered + covered**2 / 3),
        )

    def totals(self) -> tuple[float, ...]:
        return tuple(p[-1] for p in self.prefix)

    def cluster_ends(self, bounds: np.ndarray, cluster: int) -> tuple[float, float]:
        """Ends of the occupied part of a non-empty cluster."""
        occupied, edges = self.histogram.occupied, self.edges
        low, high = self.lo, self.hi
        if cluster > 0:
            split = np.searchsorted(edges, bounds[cluster - 1], side="right") - 1
            first = occupied[min(np.searchsorted(occupied, split), occupied.size - 1)]
            low = max(float(bounds[cluster - 1]), edges[first])
        if cluster < bounds.size:
            split = np.searchsorted(edges, bounds[cluster], side="right") - 1
            last = occupied[max(np.searchsorted(occupied, split, side="right") - 1, 0)]
            high = min(float(bounds[cluster]), edges[last + 1])
        return min(low, self.hi), max(high, self.lo)


class _Gathered(_Sorted):
    """Exact cumulative statistics of a large layer: whole bins from the histogram's prefix
    sums, plus the sorted values of the bins around the current thresholds (gathered in one
    pass, and again whenever a threshold moves out of them)."""

    def __init__(self, histogram: _Histogram, bounds: np.ndarray) -> None:
        self.histogram = histogram
        self.lo, self.hi = float(histogram.lo), float(histogram.hi)
        self.reach = _REACH
        self._gather(bounds)

    def _positions(self, bounds: np.ndarray) -> np.ndarray:
        """Index among the occupied bins of the first occupied bin at or above each bound's bin."""
        bounds = np.asarray(bounds, dtype=np.float32)
        return np.searchsorted(self.histogram.occupied, self.histogram.bin_of(bounds), side="left")

    def _gather(self, bounds: np.ndarray) -> None:
        # Per bound: the bins within `reach` times the spacing of the bounds there, and one
        # occupied bin beyond on each side, so that both the partial bin and the cluster ends
        # next to the bound are in the gathered values as long as it stays within reach.
        histogram = self.histogram
        wide = bounds.astype(np.float64)
        spacing = np.diff(np.concatenate(([self.lo], wide, [self.hi])))
        reach = self.reach * np.minimum(spacing[:-1], spacing[1:])
        first = np.maximum(self._positions(wide - reach) - 1, 0)
        last = np.minimum(self._positions(wide + reach) + 1, histogram.occupied.size - 1)
        ends = np.zeros(histogram.occupied.size + 1, dtype=np.int64)
        np.add.at(ends, first, 1)
        np.add.at(ends, last + 1, -1)
        self.covered = np.cumsum(ends[:-1]) > 0
        take = np.zeros(_BINS, dtype=bool)
        take[histogram.occupied[self.covered]] = True
        parts = [chunk[take[histogram.bin_of(chunk)]] for chunk in histogram.chunks()]
        self.values = np.sort(np.concatenate(parts))
        self.bins = histogram.bin_of(self.values)
        wide = self.values.astype(np.float64)
        self.prefix = _prefix_sums(np.ones(wide.size, dtype=np.int64), wide, wide * wide)

    def cumulative(self, bounds: np.ndarray) -> tuple[np.ndarray, ...]:
        positions = self._positions(bounds)
        last = self.covered.size - 1
        needed = np.concatenate([np.clip(positions + d, 0, last) for d in (-1, 0, 1)])
        if not self.covered[needed].all():
            self.reach *= 2
            self._gather(bounds)
        split = self.histogram.bin_of(bounds)
        ends = np.searchsorted(self.values, bounds, side="right")
        starts = np.searchsorted(self.bins, split, side="left")
        # Values of lower bins (all below the bound) plus those of the bound's own bin up to it.
        return tuple(
            whole[split] + part[ends] - part[starts]
            for whole, part in zip(self.histogram.prefix, self.prefix, strict=True)
        )

    def totals(self) -> tuple[float, ...]:
        return tuple(p[-1] for p in self.histogram.prefix)


def _lloyd(
    data: _Sorted, centroids: np.ndarray, max_iter: int, max_shift: float, *, accelerate: bool = False
) -> tuple[np.ndarray, int, bool]:
    """Lloyd iterations from sorted ``centroids``; stops when the partition repeats or no
    centroid moves more than ``max_shift``. Returns (centroids, iterations, converged).

    ``accelerate``: once Lloyd's steps are small or many (``_NEWTON_START``, ``_NEWTON_AFTER``),
    an iteration is a Newton step on the distortion (:func:`_newton_step`) instead whenever that
    lowers the distortion more than the Lloyd step. Lloyd crawls along the flat directions of
    the distortion (tens of thousands of ever smaller steps with 8 bits, and stopping early
    leaves the inertia several percent higher); Newton gets there in a few hundred iterations."""
    stats = data.clusters(_midpoints_below(centroids))
    previous = None
    # After a failed Newton attempt, Lloyd steps only for `wait` iterations, doubling `backoff`
    # while attempts keep failing (each costs a solve and a few evaluations).
    wait, backoff = 0, 1
    for iteration in range(1, max_iter + 1):
        counts = stats[0]
        if previous is not None and np.array_equal(counts, previous):
            return centroids, iteration - 1, True
        previous = counts
        updated = _lloyd_step(data, centroids, stats)
        shift = float(np.max(np.abs(updated - centroids)))
        if shift <= max_shift:
            return updated, iteration, True
        updated_stats = data.clusters(_midpoints_below(updated))
        started = iteration > _NEWTON_AFTER or shift <= _NEWTON_START * (data.hi - data.lo)
        if accelerate and counts.all() and wait == 0 and started:
            newton = _newton_step(data, centroids, stats, _distortion(updated, updated_stats))
            if newton is not None:
                centroids, stats = newton
                backoff = 1
                continue
            wait, backoff = backoff, 2 * backoff
        wait = max(0, wait - 1)
        centroids, stats = updated, updated_stats
    return centroids, max_iter, False


def _lloyd_step(data: _Sorted, centroids: np.ndarray, stats: tuple[np.ndarray, ...]) -> np.ndarray:
    """Sorted cluster means (empty clusters relocated), from the clusters' ``stats``."""
    counts, sums, squares = stats
    # Counts are fractional on the histogram stand-in: divide only where positive.
    updated = np.divide(sums, counts, out=np.array(centroids, dtype=np.float64), where=counts > 0)
    if not counts.all():
        _relocate_empty(data, _midpoints_below(centroids), updated, counts, sums, squares)
    return np.sort(updated)


def _distortion(centroids: np.ndarray, stats: tuple[np.ndarray, ...]) -> float:
    """Sum of squared distances of the values to their cluster's centroid."""
    counts, sums, squares = stats
    return float(np.sum(squares - 2 * centroids * sums + counts * centroids**2))


def _newton_step(data: _Sorted, centroids: np.ndarray, stats, target: float):
    """A damped Newton step on the distortion D(c) = sum over values of (v - nearest c)**2 that
    brings D below ``target``, as (centroids, their cluster stats), or None.

    In 1-D the Hessian is tridiagonal (neighbours interact through their midpoint): with p_j the
    density (values per unit length) at midpoint m_j and gaps g_j = c_{j+1} - c_j, half of it has
    diagonal C_j - (p_j g_j + p_{j-1} g_{j-1}) / 4 and off-diagonal -p_j g_j / 4, and half the
    gradient is C_j c_j - S_j. p_j is taken over the two clusters around m_j (their count over
    their extent): the density at the midpoint itself is too bumpy for the tiny curvature of
    the flat directions. Where the factorization meets a non-positive pivot, that direction gets
    Lloyd's curvature C_j instead (a modified Cholesky), so the step always descends; it is then
    shortened to keep the centroids ordered within the values' range, and halved up to
    ``_BACKTRACK`` times until it beats ``target``."""
    counts, sums, _ = stats
    edges = np.concatenate(([data.lo], (centroids[1:] + centroids[:-1]) / 2, [data.hi]))
    density = (counts[1:] + counts[:-1]) / (edges[2:] - edges[:-2])
    off = -density * np.diff(centroids) / 4
    diag = counts.astype(np.float64)
    diag[:-1] += off
    diag[1:] += off
    step = _solve_tridiagonal(diag, off, counts * centroids - sums, counts.astype(np.float64))
    if not np.all(np.isfinite(step)):  # clusters of almost no mass (heavy tails) can blow it up
        return None
    # Largest scale keeping c - scale * step increasing and within [lo, hi].
    closing = np.diff(step)
    limits = [np.diff(centroids)[closing > 0] / closing[closing > 0]]
    if step[0] > 0:
        limits.append([(centroids[0] - data.lo) / step[0]])
    if step[-1] < 0:
        limits.append([(centroids[-1] - data.hi) / step[-1]])
    scale = min(1.0, 0.9 * float(np.min(np.concatenate(limits)))) if any(map(len, limits)) else 1.0
    if not scale > 0:
        return None
    for _ in range(_BACKTRACK):
        candidate = centroids - scale * step
        candidate_stats = data.clusters(_midpoints_below(candidate))
        if candidate_stats[0].all() and _distortion(candidate, candidate_stats) < target:
            return candidate, candidate_stats
        scale /= 2
    return None


def _solve_tridiagonal(diag, off, rhs, fallback) -> np.ndarray:
    """x with T x = rhs for the symmetric tridiagonal T (``diag``, ``off``) by LDL^T, O(k) on
    k <= 256 centroids; a pivot below 1% of ``fallback`` is replaced by ``fallback`` (the
    modified matrix is positive definite)."""
    d, e, y, floor = diag.tolist(), off.tolist(), rhs.tolist(), fallback.tolist()
    for j in range(len(d)):
        if d[j] < 0.01 * floor[j]:
            d[j] = floor[j]
        if j + 1 < len(d):
            factor = e[j] / d[j]
            d[j + 1] -= factor * e[j]
            y[j + 1] -= factor * y[j]
            e[j] = factor
    x = [0.0] * len(d)
    x[-1] = y[-1] / d[-1]
    for j in range(len(d) - 2, -1, -1):
        x[j] = y[j] / d[j] - e[j] * x[j + 1]
    return np.array(x)


def _relocate_empty(data, bounds, centroids, counts, sums, squares) -> None:
    """Move each empty cluster's centroid onto the value farthest from its centroid in the
    cluster of largest squared error (as scikit-learn does), in place; that value then belongs
    to it, so the inertia drops and no centroid is wasted."""
    occupied = counts > 0
    error = np.zeros(counts.size)
    error[occupied] = squares[occupied] - sums[occupied] ** 2 / counts[occupied]
    for empty in np.flatnonzero(~occupied):
        donor = int(np.argmax(error))
        if error[donor] <= 0:
            return
        low, high = data.cluster_ends(bounds, donor)
        mean = centroids[donor]
        centroids[empty] = low if mean - low > high - mean else high
        error[donor] = 0.0


def _initial_centroids(points: _Points, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    if init == "linear":
        return np.linspace(points.lo, points.hi, k)
    if init == "density":
        # The value at the middle of each of k equal slices of the CDF.
        counts = points.prefix[0]
        # With integer counts, the first count above (j + 0.5) n / k is the first above its floor.
        positions = (np.arange(k) + 0.5) * counts[-1] / k
        return points.values[np.searchsorted(counts[1:], positions, side="right")].astype(np.float64)
    # Forgy over the distinct points (more than k exist here, except in degenerate histograms
    # where the duplicates then become empty clusters to relocate), so no two centroids coincide.
    size = points.values.size
    return np.sort(points.values[rng.choice(size, size=k, replace=size < k)]).astype(np.float64)


def _check_weights(weights, n: int, name: str) -> np.ndarray:
    """``weights`` as float64[n]: finite, non-negative, not all zero."""
    wide = np.asarray(weights, dtype=np.float64).reshape(-1)
    if wide.size != n:
        raise ValueError(f"layer {name!r}: {wide.size} k-means weights for {n} values")
    if not np.all(np.isfinite(wide)) or wide.min() < 0 or not wide.max() > 0:
        raise ConfigError(
            f"layer {name!r}: k-means weights must be finite, >= 0 and not all zero "
            f"(range [{wide.min()}, {wide.max()}])"
        )
    return wide


def _prefix_sums(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Prefix sums with a leading 0 (``p[j]`` sums the first ``j`` entries)."""
    return tuple(np.concatenate(([0], np.cumsum(a))) for a in arrays)


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


def _bisect(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest centroid of each value (ties to the lower one, as ``nearest_centroid``);
    ``codebook`` is sorted ascending."""
    bounds = _midpoints_below(codebook)
    codes = np.empty(values.size, dtype=np.uint8)
    for lo in range(0, values.size, _CHUNK):
        codes[lo : lo + _CHUNK] = np.searchsorted(bounds, values[lo : lo + _CHUNK], side="left")
    return codes
