"""Read and write the EIE authors' per-PE dump format (their simulator's ``data/`` folder).

Layout of a dump folder (all little-endian):

* ``arithm.dat``: float32[k], the codebook; entry 0 is 0.0 (padding);
* ``act.dat``: float32, the layer's input activations;
* ``ptr/ptrK.dat``: uint32[in_features + 1], PE K's column pointers;
* ``spm/spmK.dat``: uint32 pairs ``(code, z)``, PE K's entries in column order.

The authors' AlexNet fc8 dump stores the bias as one extra input column whose activation is
1.0; ``act.dat`` then has one value fewer than there are columns and the reader appends the
1.0, so that the output is simply ``W @ a`` over all columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress import CompressedMatrix
from eie_model.encoding import EIELayer, check_layer, decode_eie, frozen_layer

DUMP_INDEX_BITS = 4
#: The most output rows `read_eie_dump` accepts, inferred or given: the decoded layer holds a row
#: pointer per row (8 bytes) and the simulator per-row state, whatever the dump's size.
MAX_OUT_FEATURES = 1 << 24


@dataclass(frozen=True, eq=False)
class EIEDump:
    """A layer read from a dump: the stored EIE layer and its input activations (bias column
    included as the last column, with activation 1.0, when the dump has one)."""

    layer: EIELayer
    activations: np.ndarray
    has_bias_column: bool
    name: str

    @property
    def matrix(self) -> CompressedMatrix:
        return decode_eie(self.layer)


def read_eie_dump(
    directory: str | Path,
    out_features: int | None = None,
    index_bits: int = DUMP_INDEX_BITS,
    *,
    max_out_features: int = MAX_OUT_FEATURES,
) -> EIEDump:
    """Read a dump folder. ``out_features`` defaults to the highest row holding a weight plus one
    (the format does not store it; padding entries, which hold none, do not count); pass it when
    trailing rows may be empty. Either way it must be at most ``max_out_features``: a few bytes
    of padding entries can point rows far away. Every defect raises ValueError (or
    FileNotFoundError for a missing file) naming it."""
    if out_features is not None and (
        isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1
    ):
        raise ValueError(f"out_features must be a positive int, got {out_features!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"EIE dump folder {directory} does not exist")
    codebook = _read(directory / "arithm.dat", "<f4").astype(np.float32)
    if codebook.size < 1 or codebook.size > 256:
        raise ValueError(
            f"{directory / 'arithm.dat'} holds {codebook.size} codebook entries, expected 1..256"
        )
    if codebook[0] != 0.0:
        raise ValueError(f"codebook entry 0 must be 0.0 (padding), got {codebook[0]}")
    if not np.all(np.isfinite(codebook)):
        raise ValueError(f"{directory / 'arithm.dat'} holds NaN or inf")
    weight_bits = max(1, int(np.ceil(np.log2(codebook.size))))
    pes = _count_pes(directory)
    ptrs = [_read(directory / "ptr" / f"ptr{k}.dat", "<u4").astype(np.int64) for k in range(pes)]
    columns = ptrs[0].size - 1
    if columns < 1 or any(p.size != columns + 1 for p in ptrs):
        raise ValueError(
            f"ptr files must all hold the same number (>= 2) of pointers, got {[p.size for p in ptrs]}"
        )
    spms = []
    for k in range(pes):
        raw = _read(directory / "spm" / f"spm{k}.dat", "<u4")
        if raw.size % 2:
            raise ValueError(
                f"spm{k}.dat holds an odd number of uint32 values ({raw.size}); expected (code, z) pairs"
            )
        spm = raw.reshape(-1, 2)
        if ptrs[k][0] != 0 or ptrs[k][-1] != spm.shape[0]:
            raise ValueError(
                f"ptr{k}.dat runs from {ptrs[k][0]} to {ptrs[k][-1]} "
                f"but spm{k}.dat has {spm.shape[0]} entries"
            )
        if spm.size and (spm[:, 0].max() >= codebook.size or spm[:, 1].max() >= 1 << index_bits):
            raise ValueError(
                f"spm{k}.dat has code {spm[:, 0].max()} (codebook of {codebook.size}) or "
                f"z {spm[:, 1].max()} (index_bits={index_bits}) out of range"
            )
        spms.append(spm)
    activations = _read(directory / "act.dat", "<f4").astype(np.float32)
    if activations.size == columns - 1:
        activations = np.append(activations, np.float32(1.0))
        has_bias = True
    elif activations.size == columns:
        has_bias = False
    else:
        raise ValueError(f"act.dat holds {activations.size} activations for {columns} columns")
    if not np.all(np.isfinite(activations)):
        raise ValueError(f"{directory / 'act.dat'} holds NaN or inf")

    ptr = np.stack(ptrs)[None]
    v = np.concatenate([s[:, 0] for s in spms]).astype(np.uint8)
    z = np.concatenate([s[:, 1] for s in spms]).astype(np.uint8)
    slice_start = np.concatenate(([0], np.cumsum([s.shape[0] for s in spms]))).astype(np.int64)
    # The format does not store out_features: decode the rows with a provisional layer whose
    # single batch is large enough for any row.
    provisional = EIELayer(
        (pes * (1 << 30), columns), pes, weight_bits, index_bits, 1 << 30, codebook, ptr, v, z, slice_start
    )
    if out_features is None:
        rows = provisional.entry_rows()[v != 0]
        out_features = int(rows.max()) + 1 if rows.size else pes
    if out_features > max_out_features:
        raise ValueError(
            f"the dump implies out_features={out_features}, more than max_out_features={max_out_features} "
            "(pass max_out_features to allow it)"
        )
    rows_per_pe = -(-out_features // pes)
    layer = frozen_layer(
        EIELayer(
            (int(out_features), columns),
            pes,
            weight_bits,
            index_bits,
            rows_per_pe,
            codebook,
            ptr,
            v,
            z,
            slice_start,
        )
    )
    check_layer(layer)
    decode_eie(layer)  # rows inside the layer, no duplicate positions
    return EIEDump(layer, activations, has_bias, directory.name)


def dump_arrays(layer: EIELayer) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The per-PE arrays of the dump format: ``ptr`` (uint32[in + 1]) and ``spm`` (uint32[n, 2])."""
    check_layer(layer)
    if layer.batches != 1:
        raise ValueError(f"the dump format holds one batch per PE; this layer has {layer.batches}")
    ptrs, spms = [], []
    for k in range(layer.pes):
        lo, hi = layer.slice_start[k], layer.slice_start[k + 1]
        ptrs.append(layer.ptr[0, k].astype(np.uint32))
        spms.append(np.stack((layer.v[lo:hi], layer.z[lo:hi]), axis=1).astype(np.uint32))
    return ptrs, spms


def write_eie_dump(layer: EIELayer, activations: np.ndarray, directory: str | Path) -> None:
    """Write a layer and its input activations in the dump format (one batch; no bias column)."""
    activations = np.asarray(activations, dtype=np.float32)
    if activations.shape != (layer.in_features,):
        raise ValueError(f"activations must have shape ({layer.in_features},), got {activations.shape}")
    ptrs, spms = dump_arrays(layer)
    directory = Path(directory)
    (directory / "ptr").mkdir(parents=True, exist_ok=True)
    (directory / "spm").mkdir(parents=True, exist_ok=True)
    layer.codebook.astype("<f4").tofile(directory / "arithm.dat")
    activations.astype("<f4").tofile(directory / "act.dat")
    for k, (ptr, spm) in enumerate(zip(ptrs, spms)):
        ptr.astype("<u4").tofile(directory / "ptr" / f"ptr{k}.dat")
        spm.astype("<u4").tofile(directory / "spm" / f"spm{k}.dat")


def _count_pes(directory: Path) -> int:
    for sub in ("ptr", "spm"):
        if not (directory / sub).is_dir():
            raise FileNotFoundError(f"EIE dump folder {directory} has no {sub}/ folder")
    pes = 0
    while (directory / "ptr" / f"ptr{pes}.dat").is_file():
        pes += 1
    found = sorted(p.name for p in (directory / "ptr").glob("ptr*.dat"))
    if pes == 0 or len(found) != pes:
        raise ValueError(f"ptr files must be ptr0.dat .. ptr{{N-1}}.dat without gaps, found {found[:8]}...")
    for k in range(pes):
        if not (directory / "spm" / f"spm{k}.dat").is_file():
            raise FileNotFoundError(f"{directory / 'spm' / f'spm{k}.dat'} is missing")
    spm_files = len(list((directory / "spm").glob("spm*.dat")))
    if spm_files != pes:
        raise ValueError(f"{pes} ptr files but {spm_files} spm files in {directory}")
    return pes


def _read(path: Path, dtype: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    size = path.stat().st_size
    itemsize = np.dtype(dtype).itemsize
    if size % itemsize:
        raise ValueError(f"{path} has {size} bytes, not a whole number of {itemsize}-byte values")
    return np.fromfile(path, dtype=dtype)
