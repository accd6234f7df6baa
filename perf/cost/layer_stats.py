"""What the roofline needs from a layer's GPU layouts: exact bytes and per-program loop trips.

For a benchmark layer (a random compressed layer of the spec's shape and density), both GPU forms
are built once and summarized: their exact ``bit_counts()``, the metadata a launch passes (widths,
column blocks, table size, offset and length dtypes) and histograms of the work per program
(entries per row of each fixed-width slice; Huffman steps of each program), from which the loop
trips of any block size follow. Building the layouts of a large layer takes seconds (VGG-6 holds
4M kept weights), so summaries are cached in a JSON file keyed by the layer, the code width, the
seed and a fingerprint of the source of the modules that build them: a changed layout or random
layer generator rebuilds, anything else reads the cache.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from perf.harness import REPO_ROOT

CACHE_PATH = REPO_ROOT / "perf" / "results" / "cost" / "layer_stats.json"
DEFAULT_BITS = 5  # Deep Compression's FC code width (the report's CPU layers use it too)


@dataclass(frozen=True)
class FixedStats:
    """A fixed-width `GpuLayout`: its ``metadata()``, codebook size, bits and slice lengths
    (entries per row of a slice: ``{length: slices}``)."""

    metadata: dict[str, int]
    codebook_size: int
    bit_counts: dict[str, int]
    slice_lengths: dict[int, int]

    code_bits = property(lambda self: self.metadata["code_bits"])
    index_bits = property(lambda self: self.metadata["index_bits"])
    slice_rows = property(lambda self: self.metadata["slice_rows"])
    entries = property(lambda self: self.metadata["entries"])

    @property
    def n_slices(self) -> int:
        return sum(self.slice_lengths.values())


@dataclass(frozen=True)
class HuffmanStats:
    """A `HuffmanLayout`: its ``metadata()``, the sizes and dtypes of its tensors, its symbol count
    (kept weights plus escapes), bits and decode-step histogram (``{steps: programs}``)."""

    metadata: dict[str, int]
    words: int
    table_bits: int
    codebook_size: int
    offsets_dtype: str
    lengths_dtype: str
    spans_dtype: str
    row_ids_dtype: str
    symbols: int
    bit_counts: dict[str, int]
    program_steps: dict[int, int]

    pieces = property(lambda self: self.metadata["pieces"])
    rows_per_program = property(lambda self: self.metadata["rows_per_program"])
    total_bits = property(lambda self: self.metadata["total_bits"])

    @property
    def n_programs(self) -> int:
        return sum(self.program_steps.values())

    @property
    def lanes(self) -> int:
        return self.pieces * self.rows_per_program


@dataclass(frozen=True)
class LayerStats:
    """One benchmark layer (``outputs x inputs`` at ``density``) in both GPU forms."""

    name: str
    inputs: int
    outputs: int
    density: float
    bits: int
    seed: int
    nnz: int
    fixed: FixedStats
    huffman: HuffmanStats
    build_seconds: float

    def to_json(self) -> dict:
        data = asdict(self)
        data["fixed"]["slice_lengths"] = sorted(self.fixed.slice_lengths.items())
        data["huffman"]["program_steps"] = sorted(self.huffman.program_steps.items())
        return data

    @classmethod
    def from_json(cls, data: dict) -> LayerStats:
        fixed = dict(data["fixed"], slice_lengths={int(k): int(v) for k, v in data["fixed"]["slice_lengths"]})
        huffman = dict(
            data["huffman"], program_steps={int(k): int(v) for k, v in data["huffman"]["program_steps"]}
        )
        return cls(**{**data, "fixed": FixedStats(**fixed), "huffman": HuffmanStats(**huffman)})


def _histogram(values: np.ndarray) -> dict[int, int]:
    unique, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    return {int(u): int(c) for u, c in zip(unique, counts)}


def build_stats(spec, bits: int = DEFAULT_BITS, seed: int = 0) -> LayerStats:
    """Build the layer's random matrix and both layouts and summarize them (seconds at LLM size)."""
    from dc_kernels.fixed.layout import GpuLayout
    from dc_kernels.huffman.layout import HuffmanLayout

    started = time.perf_counter()
    matrix = spec.random_matrix(bits, seed=seed)
    fixed = GpuLayout.from_matrix(matrix)
    slice_len = np.diff(fixed.slice_ptr.numpy()) // fixed.slice_rows
    fixed_stats = FixedStats(
        fixed.metadata(), int(fixed.codebook.numel()), fixed.bit_counts(), _histogram(slice_len)
    )
    del fixed
    huffman = HuffmanLayout.from_matrix(matrix)

    def dtype(t) -> str:
        return str(t.dtype).removeprefix("torch.")

    huffman_stats = HuffmanStats(
        metadata=huffman.metadata(),
        words=int(huffman.words.numel()),
        table_bits=huffman.table_bits,
        codebook_size=huffman.codebook_size,
        offsets_dtype=dtype(huffman.prog_base),
        lengths_dtype=dtype(huffman.seg_len),
        spans_dtype=dtype(huffman.seg_span),
        row_ids_dtype=dtype(huffman.row_ids),
        symbols=huffman.symbols(),
        bit_counts=huffman.bit_counts(),
        program_steps=_histogram(huffman.prog_steps.numpy()),
    )
    return LayerStats(
        name=spec.name,
        inputs=spec.inputs,
        outputs=spec.outputs,
        density=spec.weight_density,
        bits=bits,
        seed=seed,
        nnz=matrix.nnz,
        fixed=fixed_stats,
        huffman=huffman_stats,
        build_seconds=round(time.perf_counter() - started, 2),
    )


def source_fingerprint() -> str:
    """A hash of the source of everything that decides a summary: both layouts, the Huffman
    code and the random layer generator."""
    import compress
    import compress.huffman
    import dc_kernels.fixed.layout
    import dc_kernels.huffman.layout

    modules = (
        dc_kernels.fixed.layout,
        dc_kernels.huffman.layout,
        compress.huffman,
        inspect.getmodule(compress.random_compressed_matrix),
    )
    digest = hashlib.sha256()
    for module in modules:
        digest.update(inspect.getsource(module).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _key(spec, bits: int, seed: int) -> str:
    return f"{spec.name}|{spec.outputs}x{spec.inputs}|d{spec.weight_density}|{bits}b|seed{seed}"


def layer_stats(
    specs,
    bits: int = DEFAULT_BITS,
    seed: int = 0,
    cache: Path | None = CACHE_PATH,
    progress: Callable[[str], None] | None = None,
) -> dict[str, LayerStats]:
    """Summaries of ``specs`` (by name), read from ``cache`` where its fingerprint matches and
    built (then written back) otherwise; ``cache=None`` always builds."""
    say = progress or (lambda message: None)
    fingerprint = source_fingerprint()
    stored: dict = {}
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("fingerprint") == fingerprint:
            stored = data.get("layers", {})
    out, built = {}, False
    for k, spec in enumerate(specs, 1):
        key = _key(spec, bits, seed)
        if key in stored:
            out[spec.name] = LayerStats.from_json(stored[key])
            continue
        out[spec.name] = build_stats(spec, bits, seed)
        stored[key] = out[spec.name].to_json()
        built = True
        say(f"layouts [{k}/{len(specs)}] {spec.name}: built in {out[spec.name].build_seconds:.1f} s")
    if built and cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"fingerprint": fingerprint, "layers": stored}, indent=1) + "\n")
    return out
