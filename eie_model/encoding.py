"""EIE's interleaved CSC: a `compress.CompressedMatrix` laid out over N processing elements.

Row ``i`` of the (out_features x in_features) matrix belongs to PE ``i % N`` as its local row
``i // N``. Each PE stores its part of every column j as a run of entries (v, z):

* ``v`` (``weight_bits`` wide) indexes the EIE codebook, whose entry 0 is the zero weight; so
  ``v = code + 1`` for a kept weight with canonical code ``code`` and ``v = 0`` for padding;
* ``z`` (``index_bits`` wide) counts the zero rows before the entry inside the PE's slice of
  the column, so the entry's local row is the running sum of ``z + 1`` minus 1.

A gap of ``g`` zero rows becomes ``g // 2**index_bits`` padding entries (v = 0,
z = 2**index_bits - 1, each advancing ``2**index_bits`` rows) followed by the real entry with
``z = g % 2**index_bits``: the paper's column [0, 0, 1, 2, 0 x 18, 3] is v = [1, 2, 0, 3],
z = [2, 0, 15, 2]. Trailing zeros of a column need no entries. Column pointers (``in_features + 1``
per PE) give the run of each column: entries ``ptr[j] .. ptr[j+1] - 1``.

Batches: a PE's destination register file holds ``batch_rows`` accumulators, so a PE owning
more local rows is computed in batches of ``batch_rows`` local rows, each with its own
pointers and with ``z`` counted from the batch's first row (the batch is a separate pass over
the input). Unbatched layers have one batch. Entries of the slices (batch, PE) are stored one
after another in ``(batch, pe)`` order; ``slice_start`` gives their offsets.

Codebook policy: v = 0 is reserved, so a layer may have at most ``2**weight_bits - 1`` centroids.
`encode_eie` refuses a larger codebook with `CodebookTooLargeError`; `eie_model.fit_codebook`
re-clusters it explicitly (exact when few enough centroids are used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress import CompressedMatrix
from compress.checks import check_int


class CodebookTooLargeError(ValueError):
    """The layer has more centroids than the EIE weight index can address (v = 0 is reserved)."""


@dataclass(frozen=True, eq=False)
class EIELayer:
    """A layer in EIE's interleaved CSC format (see the module docstring).

    * ``codebook``: float32[k + 1] with ``codebook[0] == 0.0`` (the padding weight);
    * ``ptr``: int64[batches, pes, in_features + 1], column pointers local to each slice;
    * ``v``, ``z``: uint8[entries], the entries of all slices in ``(batch, pe)`` order;
    * ``slice_start``: int64[batches * pes + 1], offset of each slice in ``v`` and ``z``.
    """

    shape: tuple[int, int]
    pes: int
    weight_bits: int
    index_bits: int
    batch_rows: int
    codebook: np.ndarray
    ptr: np.ndarray
    v: np.ndarray
    z: np.ndarray
    slice_start: np.ndarray

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def batches(self) -> int:
        return int(self.ptr.shape[0])

    @property
    def rows_per_pe(self) -> int:
        """Local rows of the busiest PE (PE 0)."""
        return -(-self.shape[0] // self.pes)

    @property
    def entries(self) -> int:
        """Stored entries, padding included."""
        return int(self.v.size)

    @property
    def padding_entries(self) -> int:
        return int(np.count_nonzero(self.v == 0))

    def column_counts(self) -> np.ndarray:
        """Entries (padding included) of every (batch, pe, column): int64[batches, pes, in]."""
        return np.diff(self.ptr, axis=2)

    def pe_entries(self) -> np.ndarray:
        """Entries stored by each PE over all batches: int64[pes]."""
        return self.ptr[:, :, -1].sum(axis=0)

    def batch_base(self) -> np.ndarray:
        """Address of each batch's first entry inside its PE's sparse-matrix SRAM: int64[batches, pes]
        (a PE stores its batches one after another)."""
        sizes = self.ptr[:, :, -1]
        return np.cumsum(sizes, axis=0) - sizes

    def entry_rows(self) -> np.ndarray:
        """Global output row of every entry (padding included): int64[entries]."""
        return entry_positions(self)[1]

    def entry_columns(self) -> np.ndarray:
        """Input column of every entry: int64[entries]."""
        return entry_positions(self)[0]


def encode_eie(
    matrix: CompressedMatrix,
    pes: int = 64,
    weight_bits: int = 4,
    index_bits: int = 4,
    batch_rows: int | None = None,
) -> EIELayer:
    """Encode a canonical layer in EIE's interleaved CSC for ``pes`` PEs (vectorized).

    ``batch_rows`` is the destination register file size (local rows per batch); ``None`` keeps
    all of a PE's rows in one batch. Raises `CodebookTooLargeError` when the layer has more than
    ``2**weight_bits - 1`` centroids (use `eie_model.fit_codebook` first).
    """
    if not isinstance(matrix, CompressedMatrix):
        raise TypeError(f"matrix must be a compress.CompressedMatrix, got {type(matrix).__name__}")
    pes = check_int(pes, "pes", 1, 1 << 16)
    weight_bits = check_int(weight_bits, "weight_bits", 1, 8)
    index_bits = check_int(index_bits, "index_bits", 1, 8)
    max_centroids = (1 << weight_bits) - 1
    if matrix.codebook.size > max_centroids:
        raise CodebookTooLargeError(
            f"the layer has {matrix.codebook.size} centroids but {weight_bits}-bit weight indices address "
            f"only {max_centroids} (v = 0 is the zero of padding entries); re-cluster it with "
            f"eie_model.fit_codebook(matrix, {max_centroids}) or use more weight bits"
        )
    out_features, in_features = matrix.shape
    rows_per_pe = -(-out_features // pes)
    if batch_rows is None:
        batch_rows = rows_per_pe
    batch_rows = check_int(batch_rows, "batch_rows", 1, 1 << 40)
    batches = -(-rows_per_pe // batch_rows)
    n_slices = batches * pes

    rows = matrix.row_idx
    local = rows // pes
    slice_id = (local // batch_rows) * pes + rows % pes
    local_row = local % batch_rows
    segment = slice_id * in_features + matrix.col_idx.astype(np.int64)
    # CSR order has increasing rows, hence increasing local rows inside each (slice, column):
    # a stable sort by segment gives the CSC order of every slice.
    order = np.argsort(segment, kind="stable")
    segment = segment[order]
    local_row = local_row[order]
    codes = matrix.codes[order]

    nnz = segment.size
    previous = np.full(nnz, -1, dtype=np.int64)
    if nnz:
        same = segment[1:] == segment[:-1]
        previous[1:][same] = local_row[:-1][same]
    gap = local_row - previous - 1
    fillers = gap >> index_bits
    position = np.arange(nnz, dtype=np.int64) + np.cumsum(fillers)
    total = nnz + int(fillers.sum())
    v = np.zeros(total, dtype=np.uint8)
    z = np.full(total, (1 << index_bits) - 1, dtype=np.uint8)
    v[position] = codes.astype(np.uint8) + 1
    z[position] = (gap & ((1 << index_bits) - 1)).astype(np.uint8)

    counts = np.bincount(segment, weights=fillers + 1, minlength=n_slices * in_features)
    ptr = np.zeros((batches, pes, in_features + 1), dtype=np.int64)
    np.cumsum(counts.astype(np.int64).reshape(batches, pes, in_features), axis=2, out=ptr[:, :, 1:])
    slice_start = np.zeros(n_slices + 1, dtype=np.int64)
    np.cumsum(ptr[:, :, -1].reshape(-1), out=slice_start[1:])
    codebook = np.concatenate(([0.0], matrix.codebook)).astype(np.float32)
    return frozen_layer(
        EIELayer(
            (out_features, in_features),
            pes,
            weight_bits,
            index_bits,
            batch_rows,
            codebook,
            ptr,
            v,
            z,
            slice_start,
        )
    )


def decode_eie(layer: EIELayer) -> CompressedMatrix:
    """The canonical layer an EIE layer stores (padding dropped); raises ValueError when the
    streams are inconsistent (bad pointers, out-of-range v or z, rows outside the layer)."""
    check_layer(layer)
    cols, rows, local_row = entry_positions(layer)
    if local_row.size and local_row.max() >= layer.batch_rows:
        raise ValueError(
            f"an entry decodes to local row {local_row.max()} of a batch of {layer.batch_rows} rows"
        )
    real = layer.v != 0
    rows, cols = rows[real], cols[real]
    if rows.size and rows.max() >= layer.out_features:
        raise ValueError(f"an entry decodes to row {rows.max()}, outside out_features={layer.out_features}")
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    if rows.size > 1 and np.any((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])):
        raise ValueError("two entries decode to the same (row, column)")
    row_ptr = np.zeros(layer.out_features + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=layer.out_features), out=row_ptr[1:])
    codes = (layer.v[real][order] - 1).astype(np.uint8)
    return CompressedMatrix(layer.shape, layer.codebook[1:], row_ptr, cols, codes, layer.weight_bits)


def check_layer(layer: EIELayer) -> None:
    """Validate the structure of an EIE layer (shapes, pointers, field ranges)."""
    if not isinstance(layer, EIELayer):
        raise TypeError(f"expected an EIELayer, got {type(layer).__name__}")
    out_features, in_features = layer.shape
    ptr = layer.ptr
    if ptr.ndim != 3 or ptr.shape[1] != layer.pes or ptr.shape[2] != in_features + 1:
        raise ValueError(f"ptr must have shape (batches, {layer.pes}, {in_features + 1}), got {ptr.shape}")
    rows_per_pe = -(-out_features // layer.pes)
    if layer.batch_rows < 1 or ptr.shape[0] != -(-rows_per_pe // layer.batch_rows):
        raise ValueError(
            f"{ptr.shape[0]} batches do not match {out_features} rows over {layer.pes} PEs "
            f"in batches of {layer.batch_rows} rows"
        )
    if np.any(ptr[:, :, 0] != 0) or np.any(np.diff(ptr, axis=2) < 0):
        raise ValueError("column pointers must start at 0 and be non-decreasing in every slice")
    sizes = ptr[:, :, -1].reshape(-1)
    if layer.slice_start.size != sizes.size + 1 or np.any(np.diff(layer.slice_start) != sizes):
        raise ValueError("slice_start does not match the slices' last column pointers")
    if layer.slice_start[0] != 0 or layer.slice_start[-1] != layer.v.size or layer.z.size != layer.v.size:
        raise ValueError(
            f"slices hold {layer.slice_start[-1]} entries but v has {layer.v.size} and z has {layer.z.size}"
        )
    if layer.codebook.ndim != 1 or not 1 <= layer.codebook.size <= 1 << layer.weight_bits:
        raise ValueError(f"codebook must hold 1..{1 << layer.weight_bits} entries, got {layer.codebook.size}")
    if layer.codebook[0] != 0.0:
        raise ValueError(f"codebook[0] must be 0.0 (the padding weight), got {layer.codebook[0]}")
    if layer.v.size and int(layer.v.max()) >= layer.codebook.size:
        raise ValueError(f"v must lie in 0..{layer.codebook.size - 1}, got {int(layer.v.max())}")
    if layer.z.size and int(layer.z.max()) >= 1 << layer.index_bits:
        raise ValueError(f"z must lie in 0..{(1 << layer.index_bits) - 1}, got {int(layer.z.max())}")


def entry_positions(layer: EIELayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column, global row and local row inside its batch of every entry (padding included),
    decoded as a PE does: the local row is the running sum of z + 1 within the column, minus 1."""
    pes, columns = layer.pes, layer.in_features
    counts = np.diff(layer.ptr, axis=2).reshape(-1)
    segment = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    cols = segment % columns
    slice_id = segment // columns
    running = np.cumsum(layer.z.astype(np.int64) + 1)
    seg_first = np.concatenate(([0], np.cumsum(counts)))[:-1]
    before = np.concatenate(([0], running))[seg_first]
    local_row = running - before[segment] - 1
    batch, pe = slice_id // pes, slice_id % pes
    rows = pe + pes * (batch * layer.batch_rows + local_row)
    return cols, rows, local_row


def frozen_layer(layer: EIELayer) -> EIELayer:
    """Mark the layer's arrays read-only (layers are never mutated after construction)."""
    for array in (layer.codebook, layer.ptr, layer.v, layer.z, layer.slice_start):
        array.setflags(write=False)
    return layer
