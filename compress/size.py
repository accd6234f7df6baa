"""Exact storage size of compressed layers, in the paper's table layout.

Sizes come from the real encodings (``compress.relative_index``), not from formulas: every
stream's exact bit count, fillers included, plus the codebook (32 bits per entry) and the row
pointers. Only weights are counted (no biases), like the paper's tables.

One encoding scheme is one column group, named by its suffix (``pq`` = pruning + quantization
in the relative-index format, ``dq`` = the same layer as dense codes: a code per weight, pruned
weights the zero code). :func:`layer_size` builds a layer's row from
:func:`scheme_columns` per scheme; :func:`size_table` sums the additive columns into a total
row and derives the ratios again with the same function, so a new scheme (Huffman: ``pqh``) is
one more ``scheme_columns`` call in :func:`layer_size`.

A layer runs in one of two forms in memory (`smaller_form`, from `form_bits`): the sparse form
(relative-index entries at the index width with the fewest bits) where it is clearly the smaller,
else dense codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from compress.huffman import stream_bits
from compress.matrix import CompressedMatrix
from compress.relative_index import MAX_INDEX_BITS, encode_relative, pointer_bits, relative_entries, row_gaps
from compress.relative_index_huffman import encode_huffman

DENSE_BITS_PER_WEIGHT = 32  # the dense float32 original
# `pick_form`: the share of dense codes' bits the sparse form must save to be chosen.
SPARSE_MIN_SAVING = 0.2

# Per scheme: bits of the weight codes, of the relative indices, and of everything else
# (codebook, row pointers, code tables); the table's ratios are derived from these.
_STREAMS = ("code_stream_bits", "index_stream_bits", "overhead_bits")


def scheme_columns(
    suffix: str, *, nnz: int, weights: int, code_bits: int, index_bits: int, overhead_bits: int
) -> dict:
    """The columns of one encoding scheme for a layer (or a sum of layers).

    ``weight_bits_<s>`` and ``index_bits_<s>`` are bits per kept weight (fillers included, so they
    exceed the nominal widths when gaps need fillers), ``bytes_<s>`` the whole layer rounded up to
    bytes, ``rate_<s>`` compressed bytes / dense float32 bytes (the paper's "compress rate").
    """
    total_bits = code_bits + index_bits + overhead_bits
    compressed_bytes = -(-total_bits // 8)
    return {
        f"weight_bits_{suffix}": code_bits / nnz if nnz else 0.0,
        f"index_bits_{suffix}": index_bits / nnz if nnz else 0.0,
        f"bytes_{suffix}": compressed_bytes,
        f"rate_{suffix}": compressed_bytes / (weights * DENSE_BITS_PER_WEIGHT / 8),
        f"code_stream_bits_{suffix}": code_bits,
        f"index_stream_bits_{suffix}": index_bits,
        f"overhead_bits_{suffix}": overhead_bits,
    }


def format_bytes(count: int) -> str:
    """``count`` bytes for people: 950 B, 1.9 kB, 4.56 MB, 1.20 GB (powers of 1000)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"a byte count must be an int >= 0, got {count!r}")
    if count < 1000:
        return f"{count} B"
    units = (("kB", 1e3), ("MB", 1e6), ("GB", 1e9))
    unit, scale = next(((u, s) for u, s in units if count < s * 1000), units[-1])
    value = count / scale
    return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"


def compare_bytes(original: int, compressed: int, reference: str = "before") -> str:
    """How ``compressed`` bytes compare with ``original`` ones, named ``reference``: ``"14.7x
    smaller than dense"``, ``"1.4x larger than dense"`` (never "0.7x smaller") or ``"the same size
    as dense"``."""
    if compressed == original:
        return f"the same size as {reference}"
    if compressed <= 0:
        return f"nothing left of {reference}"
    ratio = original / compressed
    word = "smaller" if ratio > 1 else "larger"
    return f"{max(ratio, 1 / ratio):.1f}x {word} than {reference}"


def dense_code_width(codebook_size: int) -> int:
    """Bits per weight of the dense-codes form: room for the codebook's entries and the zero code
    just past them (a codebook of ``2**bits - 1`` entries keeps the width at ``bits``)."""
    return max(1, int(codebook_size).bit_length())


def entry_bits_by_index_width(gaps: np.ndarray, bits: int) -> dict[int, int]:
    """Relative-index width (1..8) -> entry bits ``entries * (bits + index_bits)`` of a layer of
    these `compress.relative_index.row_gaps` and code width."""
    return {width: relative_entries(gaps, width) * (bits + width) for width in range(1, MAX_INDEX_BITS + 1)}


def best_index_bits(gaps: np.ndarray, bits: int) -> int:
    """The relative-index width (1..8) with the fewest entry bits (`entry_bits_by_index_width`;
    the narrowest among equals)."""
    costs = entry_bits_by_index_width(gaps, bits)
    return min(costs, key=costs.get)


def form_bits(shape: tuple[int, int], row_ptr, col_idx, bits: int, codebook_size: int) -> dict[str, int]:
    """Bits each form of a layer takes in memory, by form name (`compress.config.WEIGHT_FORMS`):
    ``sparse``, the relative-index entries at `best_index_bits` plus row pointers; ``dense_codes``,
    a `dense_code_width` code per weight; both plus the float32 codebook. Needs only the kept
    positions, so it decides a layer's form before its weights are shared."""
    rows, cols = shape
    gaps = row_gaps(row_ptr, col_idx)
    index_bits = best_index_bits(gaps, bits)
    entries = relative_entries(gaps, index_bits)
    codebook = 32 * int(codebook_size)
    return {
        "sparse": entries * (bits + index_bits) + (rows + 1) * pointer_bits(entries) + codebook,
        "dense_codes": rows * cols * dense_code_width(codebook_size) + codebook,
    }


def smaller_form(matrix: CompressedMatrix) -> str:
    """The form (`compress.config.WEIGHT_FORMS`) ``matrix`` runs in by `form_bits` and
    `pick_form`: the sparse form where it is clearly smaller in memory, else dense codes."""
    return pick_form(
        form_bits(matrix.shape, matrix.row_ptr, matrix.col_idx, matrix.bits, matrix.codebook.size)
    )


def pick_form(sizes: Mapping[str, int]) -> str:
    """The form a layer of `form_bits`' ``sizes`` runs in: the sparse form where it saves at
    least `SPARSE_MIN_SAVING` of dense codes' bits, else dense codes, which read x without
    gathers: near their crossover (about 50% density with 4-bit codes) the sparse form is up to
    15% smaller but its kernels take about twice as long (``perf/bench_cpu.py --sweep``)."""
    return "sparse" if sizes["sparse"] <= (1 - SPARSE_MIN_SAVING) * sizes["dense_codes"] else "dense_codes"


def _dense_codes_columns(matrix: CompressedMatrix, weights: int) -> dict:
    """The ``dq`` (fixed width) and ``dqh`` (Huffman-coded) columns of a layer as dense codes."""
    k = int(matrix.codebook.size)
    width = dense_code_width(k)
    counts = np.zeros(1 << width, dtype=np.int64)
    counts[:k] = np.bincount(matrix.codes, minlength=k)
    counts[k] = weights - matrix.nnz
    row = {}
    for scheme, code_bits in (("dq", weights * width), ("dqh", sum(stream_bits(counts).values()))):
        row.update(
            scheme_columns(
                scheme,
                nnz=matrix.nnz,
                weights=weights,
                code_bits=code_bits,
                index_bits=0,
                overhead_bits=32 * k,
            )
        )
    return row


def layer_size(matrix: CompressedMatrix, index_bits: int = 5) -> dict:
    """One layer's row of the size table (see :func:`size_table` for the columns)."""
    weights = matrix.shape[0] * matrix.shape[1]
    relative = encode_relative(matrix, index_bits)
    counts = relative.bit_counts()
    row = {
        "weights": weights,
        "nnz": matrix.nnz,
        "density": matrix.density,
        "bits": matrix.bits,
        "index_bit_width": relative.index_bits,
        "fillers": relative.fillers,
        "codebook_size": int(matrix.codebook.size),
        "dense_bytes": weights * DENSE_BITS_PER_WEIGHT // 8,
    }
    # pqh: the same two streams Huffman-coded separately; each stream's bits include its code
    # table, segment offsets and word padding.
    for scheme, bits in (("pq", counts), ("pqh", encode_huffman(relative).bit_counts())):
        row.update(
            scheme_columns(
                scheme,
                nnz=matrix.nnz,
                weights=weights,
                code_bits=bits["code_bits"],
                index_bits=bits["index_bits"],
                overhead_bits=bits["codebook_bits"] + bits["row_ptr_bits"],
            )
        )
    row.update(_dense_codes_columns(matrix, weights))
    row["form"] = smaller_form(matrix)
    return row


CompressedMatrix.size_report = layer_size


def size_table(
    layers: Mapping[str, CompressedMatrix] | Iterable[tuple[str, CompressedMatrix]],
    index_bits: int | Mapping[str, int] = 5,
) -> pd.DataFrame:
    """The paper's size table: one row per layer plus a ``total`` row weighted by size.

    ``index_bits`` is one width for every layer or a width per layer name. Columns: ``weights``,
    ``nnz``, ``density``, ``bits`` (code width), ``index_bit_width``, ``fillers``,
    ``codebook_size``, ``dense_bytes``, per scheme (suffixes ``pq`` and ``pqh``, the latter
    Huffman-coded, code tables and segment offsets included; ``dq`` and ``dqh``, the layer as
    dense codes, fixed width and Huffman-coded): ``weight_bits_pq``, ``index_bits_pq`` (bits per
    kept weight), ``bytes_pq``, ``rate_pq`` (compressed / dense bytes) and the exact stream bit
    counts they derive from; and ``form``, the form the layer takes in memory (`smaller_form`;
    the total row: ``mixed`` when its layers differ).
    """
    items = list(layers.items() if isinstance(layers, Mapping) else layers)
    if not items:
        raise ValueError("size_table needs at least one layer")
    rows = {}
    for name, matrix in items:
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"layer {name!r}: expected a CompressedMatrix, got {type(matrix).__name__}")
        if name == "total":
            raise ValueError("'total' is reserved for the total row; rename that layer")
        width = index_bits[name] if isinstance(index_bits, Mapping) else index_bits
        rows[name] = layer_size(matrix, width)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "layer"
    table.loc["total"] = _total_row(table)
    return table


def _total_row(table: pd.DataFrame) -> dict:
    weights = int(table["weights"].sum())
    nnz = int(table["nnz"].sum())
    total = {
        "weights": weights,
        "nnz": nnz,
        "density": nnz / weights,
        "bits": None,
        "index_bit_width": None,
        "fillers": int(table["fillers"].sum()),
        "codebook_size": int(table["codebook_size"].sum()),
        "dense_bytes": int(table["dense_bytes"].sum()),
        "form": table["form"].iloc[0] if table["form"].nunique() == 1 else "mixed",
    }
    for suffix in _suffixes(table):
        streams = {s: int(table[f"{s}_{suffix}"].sum()) for s in _STREAMS}
        columns = scheme_columns(
            suffix,
            nnz=nnz,
            weights=weights,
            code_bits=streams["code_stream_bits"],
            index_bits=streams["index_stream_bits"],
            overhead_bits=streams["overhead_bits"],
        )
        # Each layer is stored on its own whole bytes, so the total is their sum.
        columns[f"bytes_{suffix}"] = int(table[f"bytes_{suffix}"].sum())
        columns[f"rate_{suffix}"] = columns[f"bytes_{suffix}"] / total["dense_bytes"]
        total.update(columns)
    return total


def _suffixes(table: pd.DataFrame) -> list[str]:
    prefix = "code_stream_bits_"
    return [c[len(prefix) :] for c in table.columns if c.startswith(prefix)]
