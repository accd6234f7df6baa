"""What the roofline needs from a layer's GPU layouts: exact bytes and per-program loop trips.

For a benchmark layer (a random compressed layer of the spec's shape and density), both GPU forms
are built once and summarized: their exact ``bit_counts()``, the metadata a launch passes (widths,
lane shape, column blocks, table size, offset and span dtypes), histograms of the work per
program (256-bit groups per row of each fixed-width block; Huffman steps of each program), from
which the loop trips follow, the exact number of distinct 128-byte lines of x the fixed-width
form's warps' loads touch (`x_lines`) and of the stream the Huffman form's refills touch
(`refill_lines`). Building the layouts of a large layer takes seconds
(VGG-6 holds 4M kept weights), so summaries are cached in a JSON file keyed by the layer, the code width, the
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


#: Bytes of x per column that `x_lines` is counted for: 16- and 32-bit x at batch 1, and the
#: 16-byte pieces of a batch of 2..16 rows (`dc_kernels.fixed.launch`) of 4, 8 or 16 bytes.
X_COLUMN_BYTES = (2, 4, 8, 16)


@dataclass(frozen=True)
class FixedStats:
    """A fixed-width `GpuLayout`: its ``metadata()``, codebook size, bits, block sizes
    (``{groups per row: blocks}``) and ``x_lines``: for x of ``c`` bytes per column, the sum over
    every load of x a warp issues (one per slot) of the distinct 128-byte lines its kept lanes
    read (``{c: lines}``)."""

    metadata: dict[str, int]
    codebook_size: int
    bit_counts: dict[str, int]
    block_groups: dict[int, int]
    x_lines: dict[int, int]

    code_bits = property(lambda self: self.metadata["code_bits"])
    index_bits = property(lambda self: self.metadata["index_bits"])
    block_rows = property(lambda self: self.metadata["block_rows"])
    chunks = property(lambda self: self.metadata["chunks"])
    steps = property(lambda self: self.metadata["steps"])

    @property
    def n_blocks(self) -> int:
        return sum(self.block_groups.values())


def x_lines(layout, column_bytes=X_COLUMN_BYTES) -> dict[int, int]:
    """For each ``c`` in ``column_bytes``: the sum over the x loads of every warp (one per slot
    and step) of the distinct 128-byte lines the loads' kept lanes read, x holding ``c`` bytes per
    column. A warp is 32 consecutive lanes ``t * block_rows + r`` of a program."""
    from dc_kernels.fixed.layout import chunk_first_group

    d = layout.decode_slots()
    kept = d["kept"]
    per_group = layout.slots_per_group
    block, chunk, slot = d["block"][kept], d["chunk"][kept], d["slot"][kept]
    sizes = layout.block_groups()
    step = slot // per_group - chunk_first_group(sizes[block], chunk, layout.chunks)
    warp = (chunk * layout.block_rows + d["row"][kept]) // 32
    warps = -(-layout.lanes // 32)
    access = ((block * warps + warp) * (int(sizes.max(initial=0)) + 1) + step) * per_group + slot % per_group
    column = d["column"][kept]
    out = {}
    for c in column_bytes:
        line = column * c // 128
        span = int(line.max(initial=0)) + 1
        out[int(c)] = int(np.unique(access * span + line).size)
    return out


@dataclass(frozen=True)
class HuffmanStats:
    """A `HuffmanLayout`: its ``metadata()``, the sizes and dtypes of its tensors, its symbol count
    (kept weights plus escapes), bits, decode-step histogram (``{steps: programs}``) and
    ``refill_lines`` (`refill_lines`)."""

    metadata: dict[str, int]
    words: int
    table_bits: int
    codebook_size: int
    offsets_dtype: str
    spans_dtype: str
    row_ids_dtype: str
    symbols: int
    bit_counts: dict[str, int]
    program_steps: dict[int, int]
    refill_lines: int

    pieces = property(lambda self: self.metadata["pieces"])
    rows_per_program = property(lambda self: self.metadata["rows_per_program"])
    total_bits = property(lambda self: self.metadata["total_bits"])

    @property
    def n_programs(self) -> int:
        return sum(self.program_steps.values())

    @property
    def lanes(self) -> int:
        return self.pieces * self.rows_per_program


def refill_lines(layout) -> int:
    """The sum over every refill of every warp of the fused kernel (one after each pair of steps)
    of the distinct 128-byte lines of the stream its lanes load a word from. A lane holds its
    next two words and the one after; a refill that moves a word in loads word ``consumed + 2`` of
    the lane (`HuffmanLayout.step_bits`), a load only below the warp's words a lane: stored at
    ``warp_base + 32 (j - HEAD_WORDS) + lane`` past the heads, word ``j`` of a warp's lanes is one
    line."""
    from dc_kernels.huffman.layout import HEAD_WORDS

    bits = layout.step_bits()
    if bits.shape[0] % 2:
        bits = np.concatenate((bits, np.zeros((1, bits.shape[1]), bits.dtype)))
    consumed = np.cumsum(bits.astype(np.int64), axis=0)[1::2] >> 5  # after each pair
    before = np.concatenate((np.zeros((1, consumed.shape[1]), np.int64), consumed[:-1]))
    warp = np.arange(consumed.shape[1]) // 32
    warp_words = np.zeros(int(warp.max(initial=0)) + 1, dtype=np.int64)  # warps not stored: none
    stored = HEAD_WORDS + np.diff(layout.warp_base.cpu().numpy().astype(np.int64)) // 32
    warp_words[: stored.size] = stored
    word = consumed + 2
    loads = (consumed > before) & (word < warp_words[warp][None, :])
    pair = np.broadcast_to(np.arange(consumed.shape[0])[:, None], word.shape)
    shape = (consumed.shape[0], warp_words.size, int(warp_words.max(initial=1)))
    keys = np.ravel_multi_index((pair[loads], np.broadcast_to(warp, word.shape)[loads], word[loads]), shape)
    return int(np.unique(keys).size)


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
        data["fixed"]["block_groups"] = sorted(self.fixed.block_groups.items())
        data["fixed"]["x_lines"] = sorted(self.fixed.x_lines.items())
        data["huffman"]["program_steps"] = sorted(self.huffman.program_steps.items())
        return data

    @classmethod
    def from_json(cls, data: dict) -> LayerStats:
        fixed = dict(
            data["fixed"],
            block_groups={int(k): int(v) for k, v in data["fixed"]["block_groups"]},
            x_lines={int(k): int(v) for k, v in data["fixed"]["x_lines"]},
        )
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
    fixed_stats = FixedStats(
        fixed.metadata(),
        int(fixed.codebook.numel()),
        fixed.bit_counts(),
        _histogram(fixed.block_groups()),
        x_lines(fixed),
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
        offsets_dtype=dtype(huffman.warp_base),
        spans_dtype=dtype(huffman.seg_span),
        row_ids_dtype=dtype(huffman.row_ids),
        symbols=huffman.symbols(),
        bit_counts=huffman.bit_counts(),
        program_steps=_histogram(huffman.prog_steps.numpy()),
        refill_lines=refill_lines(huffman),
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
