"""EIE workloads generated from measured statistics: how unevenly a real layer's weights and a real
input's non-zeros are spread, applied to the paper's benchmark shapes.

The paper's trained layers are not public, so every benchmark layer is a random layer of the
paper's shape and weight density (Table III). How it is random matters to EIE: uneven row
densities unbalance the PEs, uneven column densities make some broadcasts heavier, and an input
whose non-zeros fall on denser columns carries more work. `WorkloadStats` holds those statistics
in a shape-free form, `measure_workload_stats` measures them on a real layer and input, and
`workload_inputs` generates a benchmark layer and input from them. Presets (`WORKLOADS`):

* ``uniform``: uniformly random positions and inputs at Table III's average activation density,
  exactly `workloads.benchmark_inputs` (the generator the model used first);
* ``fc8-stats``: the statistics of the EIE authors' AlexNet fc8 dump (one real pruned layer and
  the input of one real image), measured by `measure_workload_stats` on its 4096 weight columns
  (the bias column, always active, is structural and left out).

Generation: each row i gets a density multiplier r_i and each column j a multiplier c_j, both
Gamma-distributed with mean 1 and the stats' spreads as coefficients of variation; kept
positions are drawn with probability proportional to r_i c_j (drawn with replacement,
deduplicated, then exactly ``round(density * out * in)`` kept), with the spreads raised to
make up for the flattening of deduplication. The input's active positions are drawn with
weights c_j ** gamma, gamma chosen so that the active columns' mean multiplier over all
columns' matches ``active_column_ratio``. Nothing here is fitted to published timings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from compress.matrix import CompressedMatrix
from workloads.paper_layers import benchmark_activations, benchmark_inputs, scaled_benchmark
from workloads.synthetic import layer_at_positions, random_compressed_matrix, random_layer_size, sorted_unique

_MAX_SPREAD = 4.0


@dataclass(frozen=True)
class WorkloadStats:
    """Shape-free statistics of a layer and its input that drive `workload_inputs`.

    * ``row_spread``, ``column_spread``: coefficients of variation of the rows' and the columns'
      underlying densities (the observed spread of their kept-weight counts with the binomial
      spread of a uniformly random layer of the same shape and density removed);
    * ``active_column_ratio``: mean kept weights of the input's active columns over the mean of
      all columns (1: the input's non-zeros do not prefer denser columns);
    * ``activation_density_scale``: this input's share of non-zero activations over the layer's
      average (Table III) density; generated inputs use the benchmark's density times this,
      at most 1;
    * ``source``: where the numbers come from.
    """

    name: str
    row_spread: float
    column_spread: float
    active_column_ratio: float
    activation_density_scale: float
    source: str

    def __post_init__(self) -> None:
        for field in ("row_spread", "column_spread", "active_column_ratio", "activation_density_scale"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{field} must be a finite number, got {value!r}")
        for field in ("row_spread", "column_spread"):
            if not 0.0 <= getattr(self, field) <= _MAX_SPREAD:
                raise ValueError(f"{field} must be in [0, {_MAX_SPREAD}], got {getattr(self, field)}")
        for field in ("active_column_ratio", "activation_density_scale"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")

    @property
    def is_uniform(self) -> bool:
        """No spread and no preference: the uniform generator's statistics."""
        return (
            self.row_spread == 0.0
            and self.column_spread == 0.0
            and self.active_column_ratio == 1.0
            and self.activation_density_scale == 1.0
        )

    def to_dict(self) -> dict:
        return asdict(self)


#: The presets by name (see the module docstring).
WORKLOADS: dict[str, WorkloadStats] = {
    "uniform": WorkloadStats(
        "uniform", 0.0, 0.0, 1.0, 1.0, "uniformly random positions; Table III's average activation densities"
    ),
    "fc8-stats": WorkloadStats(
        "fc8-stats",
        row_spread=0.130,
        column_spread=0.082,
        active_column_ratio=1.003,
        activation_density_scale=round(0.4294 / 0.375, 3),
        source=(
            "measured on the EIE authors' AlexNet fc8 dump (RalphMao/EIE-simulator data: 1000 x 4096 weights "
            "at 25.7% density, one image's input 42.9% non-zero where Table III's Alex-8 average is 37.5%)"
        ),
    ),
}


def get_workload(workload: str | WorkloadStats) -> WorkloadStats:
    """A preset by name, or ``workload`` itself when it already is a `WorkloadStats`."""
    if isinstance(workload, WorkloadStats):
        return workload
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    return WORKLOADS[workload]


def _intrinsic_spread(counts: np.ndarray, trials: int, density: float) -> float:
    """Coefficient of variation of ``counts`` with the binomial part of ``trials`` draws at
    ``density`` removed (0 when the observed spread is no larger)."""
    mean = counts.mean()
    if mean == 0:
        return 0.0
    observed = counts.std() / mean
    binomial = math.sqrt((1 - density) / (density * trials)) if 0 < density < 1 else 0.0
    return math.sqrt(max(observed**2 - binomial**2, 0.0))


def measure_workload_stats(
    matrix: CompressedMatrix,
    activations: np.ndarray,
    *,
    reference_density: float | None = None,
    bias_column: bool = False,
    name: str = "measured",
    source: str = "measured",
) -> WorkloadStats:
    """The statistics of a layer and its input (see `WorkloadStats`).

    ``reference_density``: the layer's average activation density (Table III), the basis of
    ``activation_density_scale`` (default: this input's own density, a scale of 1).
    ``bias_column``: leave out the last column (a bias folded in as an always-active input).
    """
    if not isinstance(matrix, CompressedMatrix):
        raise TypeError(f"matrix must be a compress.CompressedMatrix, got {type(matrix).__name__}")
    acts = np.asarray(activations, dtype=np.float64)
    out_features, in_features = matrix.shape
    if acts.shape != (in_features,):
        raise ValueError(f"activations must have shape ({in_features},), got {acts.shape}")
    if not np.all(np.isfinite(acts)):
        raise ValueError("activations hold NaN or inf")
    columns = in_features - 1 if bias_column else in_features
    if columns < 1 or matrix.nnz == 0:
        raise ValueError(f"a {matrix.shape} layer with {matrix.nnz} kept weights has no statistics")
    keep = matrix.col_idx < columns
    rows = np.bincount(matrix.row_idx[keep], minlength=out_features).astype(np.float64)
    cols = np.bincount(matrix.col_idx[keep], minlength=columns).astype(np.float64)
    density = float(rows.sum()) / (out_features * columns)
    active = acts[:columns] != 0
    if not active.any():
        raise ValueError("the input has no non-zero activation")
    own_density = float(active.mean())
    reference = own_density if reference_density is None else float(reference_density)
    if not 0 < reference <= 1:
        raise ValueError(f"reference_density must be in (0, 1], got {reference_density}")
    return WorkloadStats(
        name,
        row_spread=_intrinsic_spread(rows, columns, density),
        column_spread=_intrinsic_spread(cols, out_features, density),
        active_column_ratio=float(cols[active].mean() / cols.mean()),
        activation_density_scale=own_density / reference,
        source=source,
    )


def _multipliers(rng: np.random.Generator, size: int, spread: float) -> np.ndarray:
    """``size`` positive numbers of mean 1 and coefficient of variation ``spread`` (Gamma)."""
    if spread == 0:
        return np.ones(size)
    shape = 1.0 / spread**2
    return rng.gamma(shape, 1.0 / shape, size)


def _weighted_draws(rng: np.random.Generator, weights: np.ndarray, count: int) -> np.ndarray:
    """``count`` indices drawn with replacement with probability proportional to ``weights``, in
    ascending order (how many of each, then repeated: faster than a search per draw)."""
    counts = rng.multinomial(count, weights / weights.sum())
    return np.repeat(np.arange(weights.size, dtype=np.int64), counts)


def stats_matrix(
    out_features: int,
    in_features: int,
    density: float,
    bits: int,
    stats: WorkloadStats,
    seed: int = 0,
    *,
    codebook_size: int | None = None,
) -> tuple[CompressedMatrix, np.ndarray]:
    """A random layer whose rows and columns spread as ``stats`` says (see the module docstring)
    and its column multipliers (for `stats_activations`); the uniform statistics give exactly
    `random_compressed_matrix` and multipliers of 1."""
    if stats.row_spread == 0 and stats.column_spread == 0:
        matrix = random_compressed_matrix(
            out_features, in_features, density, bits, seed=seed, codebook_size=codebook_size
        )
        return matrix, np.ones(in_features)
    bits, nnz, k = random_layer_size(out_features, in_features, density, bits, codebook_size)
    rng = np.random.default_rng([seed, 2])
    total = out_features * in_features
    # Drawing ``rate * total`` positions with replacement keeps a share ``density`` of them; a
    # position's chance of being kept grows as 1 - exp(-rate * r * c), which flattens the spread
    # by the elasticity rate * (1 - density) / density: raise the spreads by its inverse.
    rate = -math.log1p(-density) if density < 1 else math.inf
    elasticity = rate * (1 - density) / density if density < 1 else 1.0
    row_weights = _multipliers(rng, out_features, min(stats.row_spread / elasticity, _MAX_SPREAD))
    col_weights = _multipliers(rng, in_features, min(stats.column_spread / elasticity, _MAX_SPREAD))
    if nnz == total:
        flat = np.arange(total, dtype=np.int64)
    else:
        flat = np.empty(0, dtype=np.int64)
        draws = int(rate * total * 1.02) + 16
        while flat.size < nnz:
            rows = _weighted_draws(rng, row_weights, draws)
            cols = rng.permutation(_weighted_draws(rng, col_weights, draws))
            flat = sorted_unique(np.concatenate((flat, rows * in_features + cols)))
            draws = max(16, 2 * (nnz - flat.size))
        flat = np.sort(rng.choice(flat, size=nnz, replace=False))
    matrix = layer_at_positions((out_features, in_features), flat, bits, k, rng)
    return matrix, col_weights


def stats_activations(
    column_weights: np.ndarray, density: float, stats: WorkloadStats, seed: int = 0
) -> np.ndarray:
    """A non-negative float32 input with ``round(min(1, density * scale) * size)`` (at least one)
    half-normal non-zeros whose positions prefer columns of larger multiplier as ``stats`` says;
    the uniform statistics give exactly `benchmark_activations`."""
    weights = np.asarray(column_weights, dtype=np.float64)
    size = weights.size
    target = min(1.0, density * stats.activation_density_scale)
    if stats.active_column_ratio == 1.0 or np.all(weights == weights[0]):
        return benchmark_activations(size, target, seed)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng([seed, 3])
    count = min(size, max(1, round(target * size)))
    # Weighted sampling without replacement (Efraimidis-Spirakis keys log(u) / w) with weights
    # c ** gamma; gamma found by bisection for the wanted mean multiplier of the chosen columns.
    log_u = np.log(rng.random(size))
    log_c = np.log(weights)
    wanted = stats.active_column_ratio * weights.mean()

    def chosen(gamma: float) -> np.ndarray:
        keys = log_u * np.exp(np.clip(-gamma * log_c, -700.0, 700.0))
        return np.argpartition(-keys, count - 1)[:count] if count < size else np.arange(size)

    low, high = -64.0, 64.0
    for _ in range(48):
        middle = (low + high) / 2
        if weights[chosen(middle)].mean() < wanted:
            low = middle
        else:
            high = middle
    positions = chosen((low + high) / 2)
    out = np.zeros(size, dtype=np.float32)
    # |N(0, 1)| is 0 with probability 0; the floor keeps every chosen activation non-zero.
    out[positions] = np.maximum(np.abs(rng.standard_normal(count)), 1e-3).astype(np.float32)
    return out


def workload_inputs(
    workload: str | WorkloadStats,
    name: str,
    weight_bits: int = 4,
    seed: int = 0,
    scale: float = 1.0,
) -> tuple[CompressedMatrix, np.ndarray]:
    """The layer and input of benchmark ``name`` under ``workload`` (a preset name or stats):
    the paper's shape, weight density and activation density, spread as the workload says.
    The ``uniform`` preset gives exactly `benchmark_inputs`."""
    stats = get_workload(workload)
    if stats.is_uniform:
        return benchmark_inputs(name, weight_bits, seed, scale)
    spec, outputs, inputs = scaled_benchmark(name, scale)
    matrix, column_weights = stats_matrix(
        outputs, inputs, spec.weight_density, weight_bits, stats, seed, codebook_size=(1 << weight_bits) - 1
    )
    return matrix, stats_activations(column_weights, spec.activation_density, stats, seed)
