"""EIE's fixed-point arithmetic: formats, rounding and saturating accumulation.

Modelling assumptions (the paper gives only "16-bit fixed point"):

* one signed ``bits``-wide two's-complement format each for weights (after the codebook
  lookup), input activations and outputs/accumulators, with per-layer fraction bits chosen
  offline (`choose_format`), as a deployment flow would;
* quantization of a float rounds to nearest (ties to even) and saturates;
* the 2*bits-wide product is aligned to the output format by an arithmetic shift that rounds to
  nearest (ties up: add half an LSB, then shift right) - the "shift" of the shift-and-add stage;
* the accumulator has the output format and every addition saturates, so a row's result
  depends on the order of its updates: ascending input index, the broadcast order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class FixedPointFormat:
    """Fraction bits of weights, activations and outputs in a ``bits``-wide signed format."""

    weight_frac: int
    act_frac: int
    out_frac: int
    bits: int = 16

    def __post_init__(self) -> None:
        for name in ("weight_frac", "act_frac", "out_frac", "bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not 2 <= self.bits <= 32:
            raise ValueError(f"bits must be in 2..32, got {self.bits}")
        for name in ("weight_frac", "act_frac", "out_frac"):
            if abs(getattr(self, name)) > 64:
                raise ValueError(f"{name} must be in -64..64, got {getattr(self, name)}")

    @property
    def low(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def high(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def product_shift(self) -> int:
        """Right shift that aligns a weight x activation product with the output format."""
        return self.weight_frac + self.act_frac - self.out_frac

    def to_dict(self) -> dict:
        return asdict(self)


def frac_bits_for(max_abs: float, bits: int) -> int:
    """The most fraction bits with which ``max_abs`` still fits a signed ``bits``-wide word."""
    high = (1 << (bits - 1)) - 1
    if not np.isfinite(max_abs):
        raise ValueError(f"cannot choose a fixed-point format for the value {max_abs}")
    if max_abs <= 0:
        return bits - 1
    frac = int(np.floor(np.log2(high / max_abs)))
    while np.rint(max_abs * 2.0**frac) > high:  # guard the rounding at the edge
        frac -= 1
    return frac


def choose_format(weight_max: float, act_max: float, partial_max: float, bits: int = 16) -> FixedPointFormat:
    """Per-layer formats from the largest |weight|, |activation| and |partial sum| of the layer."""
    return FixedPointFormat(
        frac_bits_for(weight_max, bits), frac_bits_for(act_max, bits), frac_bits_for(partial_max, bits), bits
    )


def quantize(values, frac: int, bits: int) -> np.ndarray:
    """Round to nearest (ties to even) at ``frac`` fraction bits and saturate: int64 codes."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 2.0**frac)
    return np.clip(scaled, -(1 << (bits - 1)), (1 << (bits - 1)) - 1).astype(np.int64)


def dequantize(codes, frac: int) -> np.ndarray:
    return np.asarray(codes, dtype=np.float64) * 2.0**-frac


def round_shift(values: np.ndarray, shift: int) -> np.ndarray:
    """Arithmetic shift right by ``shift`` with round-to-nearest (ties up); a negative shift
    shifts left."""
    values = np.asarray(values, dtype=np.int64)
    if shift > 0:
        return (values + (1 << (shift - 1))) >> shift
    if shift < 0:
        return values << -shift
    return values


def saturating_row_sums(
    contributions: np.ndarray, rows: np.ndarray, n_rows: int, low: int, high: int
) -> np.ndarray:
    """Per-row sums of ``contributions`` added one at a time with saturation to [low, high].

    ``rows`` must be sorted (non-decreasing); within a row, contributions are added in the
    given order. Exact integer sums are used where no partial sum leaves the range (then
    saturation never acts); only the rows where it does are replayed sequentially.
    """
    contributions = np.asarray(contributions, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros(n_rows, dtype=np.int64)
    if rows.size == 0:
        return out
    counts = np.bincount(rows, minlength=n_rows)
    first = np.concatenate(([0], np.cumsum(counts)))[:-1]
    running = np.cumsum(contributions)
    before = np.concatenate(([0], running))[first]
    partial = running - before[rows]
    last = first + counts - 1
    has = counts > 0
    out[has] = partial[last[has]]
    over = np.unique(rows[(partial > high) | (partial < low)])
    if over.size:
        acc = np.zeros(over.size, dtype=np.int64)
        lengths = counts[over]
        for k in range(int(lengths.max())):
            live = lengths > k
            acc[live] = np.clip(acc[live] + contributions[first[over[live]] + k], low, high)
        out[over] = acc
    return out
