"""Fit a layer's codebook into EIE's weight index (at most ``2**weight_bits - 1`` centroids).

EIE reserves v = 0 for the zero of padding entries, so a 4-bit index addresses 15 centroids,
while Deep Compression's FC layers use 5 bits (32). `fit_codebook` makes the layer fit:

* if the layer uses few enough distinct centroids, the unused ones are dropped (exact);
* otherwise the used centroids are re-clustered by 1-D k-means weighted by how many weights use
  each (identical to k-means over the decoded weights, since each weight equals its centroid),
  with linear initialization (the Deep Compression paper's best), deterministic.
"""

from __future__ import annotations

import numpy as np

from compress import CompressedMatrix

_MAX_ITERATIONS = 200


def fit_codebook(matrix: CompressedMatrix, max_centroids: int) -> CompressedMatrix:
    """A layer with at most ``max_centroids`` centroids and the same kept positions (see module doc)."""
    if not isinstance(matrix, CompressedMatrix):
        raise TypeError(f"matrix must be a compress.CompressedMatrix, got {type(matrix).__name__}")
    if isinstance(max_centroids, bool) or not isinstance(max_centroids, (int, np.integer)):
        raise TypeError(f"max_centroids must be an int, got {max_centroids!r}")
    if max_centroids < 1:
        raise ValueError(f"max_centroids must be >= 1, got {max_centroids}")
    if matrix.codebook.size <= max_centroids:
        return matrix
    counts = np.bincount(matrix.codes, minlength=matrix.codebook.size)
    used = np.flatnonzero(counts)
    if used.size <= max_centroids:
        new_codebook = matrix.codebook[used]
        remap = np.zeros(matrix.codebook.size, dtype=np.uint8)
        remap[used] = np.arange(used.size, dtype=np.uint8)
    else:
        new_codebook, remap_used = _weighted_kmeans(
            matrix.codebook[used].astype(np.float64), counts[used].astype(np.float64), int(max_centroids)
        )
        remap = np.zeros(matrix.codebook.size, dtype=np.uint8)
        remap[used] = remap_used
    return CompressedMatrix(
        matrix.shape,
        new_codebook.astype(np.float32),
        matrix.row_ptr,
        matrix.col_idx,
        remap[matrix.codes],
        matrix.bits,
    )


def _weighted_kmeans(values: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """1-D weighted Lloyd iterations from a linear initialization; returns (centroids, assignment)."""
    centroids = np.linspace(values.min(), values.max(), k)
    assign = np.zeros(values.size, dtype=np.int64)
    for _ in range(_MAX_ITERATIONS):
        # Centroids stay sorted in 1-D, so the nearest one is found by bisecting the midpoints.
        assign = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
        mass = np.bincount(assign, weights=weights, minlength=k)
        total = np.bincount(assign, weights=weights * values, minlength=k)
        # An empty cluster keeps its centroid; sorting keeps the midpoints valid for bisection.
        updated = np.sort(np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), centroids))
        if np.array_equal(updated, centroids):
            break
        centroids = updated
    assign = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values)
    keep = np.unique(assign)  # drop clusters left empty
    remap = np.zeros(k, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    return centroids[keep], remap[assign].astype(np.uint8)
