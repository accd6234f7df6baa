"""Per-PE memory and datapath activity of one pass, from the encoded layer and the schedule.

* Sparse-matrix SRAM: a PE keeps the last line it read; a column's entries at addresses
  a .. a+n-1 need lines a // E .. (a+n-1) // E (E entries per line), except the first when it
  is still the kept line. A PE stores its batches one after another; the kept line is
  forgotten at the start of a pass.
* Bypass: two updates of the same row on adjacent cycles take the adder's bypass instead of
  re-reading the accumulator. Inside a column a PE's rows are distinct, so this can only
  happen between the last entry of one column and the first of the next broadcast column
  when the PE goes straight from one to the other (``s_{m+1} == s_m + n_m``) and that first
  entry is a real one (a padding entry updates no row; a column never ends with one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eie_model.encoding import EIELayer


@dataclass(frozen=True)
class ColumnGeometry:
    """Per broadcast column m and PE p (arrays [M, N]): entry count, SRAM address of the first
    entry, padding entries, and the local rows of the first and last entry (-1 where the column
    is empty or that entry is padding: it updates no row)."""

    entries: np.ndarray
    address: np.ndarray
    padding: np.ndarray
    first_row: np.ndarray
    last_row: np.ndarray


def entry_prefix_sums(layer: EIELayer) -> tuple[np.ndarray, np.ndarray]:
    """Exclusive prefix sums over all entries of padding entries and of ``z + 1`` (computed once
    per layer, shared by all batches)."""
    padding_before = np.concatenate(([0], np.cumsum(layer.v == 0)))
    running = np.concatenate(([0], np.cumsum(layer.z.astype(np.int64) + 1)))
    return padding_before, running


def column_geometry(
    layer: EIELayer, batch: int, columns: np.ndarray, prefix: tuple[np.ndarray, np.ndarray]
) -> ColumnGeometry:
    """Geometry of ``columns`` (the broadcast ones) in ``batch`` for every PE; ``prefix`` is
    `entry_prefix_sums` of the layer."""
    padding_before, running = prefix
    ptr = layer.ptr[batch]  # [N, in + 1]
    start = ptr[:, columns].T  # [M, N]
    end = ptr[:, columns + 1].T
    base = layer.slice_start[batch * layer.pes : (batch + 1) * layer.pes]
    first = base + start
    last = base + end
    nonempty = end > start
    if layer.z.size:
        z_first = layer.z[np.minimum(first, layer.z.size - 1)]
        real_first = layer.v[np.minimum(first, layer.v.size - 1)] != 0
        real_last = layer.v[np.maximum(last - 1, 0)] != 0
    else:
        z_first = np.zeros_like(first)
        real_first = real_last = np.zeros(first.shape, dtype=bool)
    return ColumnGeometry(
        entries=end - start,
        address=layer.batch_base()[batch] + start,
        padding=padding_before[last] - padding_before[first],
        first_row=np.where(nonempty & real_first, z_first, -1).astype(np.int64),
        last_row=np.where(nonempty & real_last, running[last] - running[first] - 1, -1),
    )


def line_reads(geometry: ColumnGeometry, entries_per_line: int) -> np.ndarray:
    """Sparse-matrix SRAM line reads of each PE over the pass: int64[N]."""
    n, address = geometry.entries, geometry.address
    nonempty = n > 0
    first_line = address // entries_per_line
    last_line = np.where(nonempty, (address + n - 1) // entries_per_line, -1)
    # Addresses grow with the column, so the kept line is the running maximum of earlier last lines.
    kept = np.maximum.accumulate(last_line, axis=0)
    kept = np.vstack((np.full((1, n.shape[1]), -1, dtype=np.int64), kept[:-1]))
    lines = last_line - first_line + 1 - (first_line == kept)
    return np.where(nonempty, lines, 0).sum(axis=0)


def bypasses(geometry: ColumnGeometry, s: np.ndarray) -> np.ndarray:
    """Back-to-back updates of one row per PE over the pass: int64[N]."""
    n = geometry.entries
    if n.shape[0] < 2:
        return np.zeros(n.shape[1], dtype=np.int64)
    adjacent = (n[:-1] > 0) & (n[1:] > 0) & (s[1:] == s[:-1] + n[:-1])
    same_row = (geometry.last_row[:-1] == geometry.first_row[1:]) & (geometry.first_row[1:] >= 0)
    return (adjacent & same_row).sum(axis=0)
