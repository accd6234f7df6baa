"""What EIE's arithmetic units compute: the layer output in fixed point, from the encoded layer.

Every entry of a broadcast column (padding included, whose weight is 0) is decoded from the
interleaved format exactly as a PE does (local row = running sum of z + 1), its 4-bit index
looked up in the codebook quantized to the weight format, multiplied by the activation,
shifted into the output format and added with saturation to its row's accumulator. A row is
updated in ascending input order (the broadcast order), which fixes the saturating result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eie_model.encoding import EIELayer, entry_positions
from eie_model.fixed_point import (
    FixedPointFormat,
    choose_format,
    dequantize,
    quantize,
    round_shift,
    saturating_row_sums,
)


@dataclass(frozen=True, eq=False)
class LayerOutput:
    """The fixed-point output (``codes``: int64[out]) in ``fmt``, its float value and the exact
    float64 result of the same layer for comparison."""

    codes: np.ndarray
    fmt: FixedPointFormat
    reference: np.ndarray

    @property
    def values(self) -> np.ndarray:
        return dequantize(self.codes, self.fmt.out_frac)

    @property
    def max_abs_error(self) -> float:
        return float(np.abs(self.values - self.reference).max()) if self.codes.size else 0.0


def compute_output(
    layer: EIELayer, activations: np.ndarray, fmt: FixedPointFormat | None = None, bits: int = 16
) -> LayerOutput:
    """The layer's output as EIE computes it; ``fmt`` defaults to `choose_format` of this layer."""
    cols, rows, _ = entry_positions(layer)
    processed = activations[cols] != 0
    rows, cols, v = rows[processed], cols[processed], layer.v[processed]
    # Entries are in (batch, PE, column, row) order and each row lives in one (batch, PE)
    # slice, so a stable sort by row gives every row's updates in ascending column order.
    order = np.argsort(rows, kind="stable")
    rows, cols, v = rows[order], cols[order], v[order]
    products = layer.codebook.astype(np.float64)[v] * activations.astype(np.float64)[cols]
    reference = np.bincount(rows, weights=products, minlength=layer.out_features)
    if fmt is None:
        weight_max = float(np.abs(layer.codebook[1:]).max()) if layer.codebook.size > 1 else 0.0
        fmt = choose_format(
            weight_max,
            float(np.abs(activations).max(initial=0.0)),
            _max_partial_sum(products, rows, layer.out_features),
            bits,
        )
    weights_q = quantize(layer.codebook, fmt.weight_frac, fmt.bits)
    acts_q = quantize(activations, fmt.act_frac, fmt.bits)
    contributions = round_shift(weights_q[v] * acts_q[cols], fmt.product_shift)
    codes = saturating_row_sums(contributions, rows, layer.out_features, fmt.low, fmt.high)
    return LayerOutput(codes, fmt, reference)


def _max_partial_sum(products: np.ndarray, rows: np.ndarray, n_rows: int) -> float:
    """Largest |partial sum| of any row in update order (the accumulator's range)."""
    if products.size == 0:
        return 0.0
    counts = np.bincount(rows, minlength=n_rows)
    first = np.concatenate(([0], np.cumsum(counts)))[:-1]
    running = np.cumsum(products)
    before = np.concatenate(([0.0], running))[first]
    return float(np.abs(running - before[rows]).max())
