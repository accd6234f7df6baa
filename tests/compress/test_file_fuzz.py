"""Seeded mutation fuzzing of `compress.load` and of a checkpoint's dense file.

Small files are truncated at every byte and mutated (bit flips and byte overwrites anywhere, in
the header, in the tensor data; byte insertions and deletions). Every outcome must be an exact
round trip or a `CompressedFileError`: never another exception, a hang or different weights.
The files include valid ones at the format's extremes (rows of nothing but fillers, one segment
of the maximum size per stream), and the mutations are also loaded with ``keep_huffman=True``.
A class forges the checksums after mutating a tensor, so that the checks behind them run; there
a load may succeed with other weights (the checksum is what catches that), but it must still
return valid layers of the header's shapes or raise a `CompressedFileError`. Container bombs
(deep or long JSON, huge numbers, thousands of extra tensor entries) must be refused. Last, the
dense file of a `dc_kernels.save_compressed` checkpoint is mutated: `load_compressed` must load
the model exactly or raise a `CompressedFileError`.

Run ``python -m tests.compress.test_file_fuzz [scale]`` for a longer campaign (scale x the CI
counts); both print the outcome counts.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import compress
from compress import CompressedFileError, CompressedMatrix, decode_huffman
from tests.compress.file_surgery import data_section, pack, unpack
from tests.compress.hostile_files import (
    all_filler_rows,
    flat_list,
    huge_number,
    many_tensor_entries,
    maximum_segments,
    nested_lists,
)
from workloads import random_compressed_matrix

SEED = 2016
METADATA = {"source": "fuzz", "seed": SEED}


def small_files() -> list[tuple[bytes, dict[str, CompressedMatrix]]]:
    """Three small files: several layers with short segments, a one-symbol layer, odd widths."""
    configs = [
        (
            {
                "fc1": random_compressed_matrix(6, 40, 0.2, 3, seed=1),
                "fc2": random_compressed_matrix(3, 17, 0.6, 5, seed=2),
            },
            {"index_bits": 3, "segment_symbols": 8},
        ),
        ({"lone": random_compressed_matrix(4, 9, 0.4, 1, seed=3, codebook_size=1)}, {"index_bits": 2}),
        (
            {"wide": random_compressed_matrix(2, 300, 0.03, 8, seed=4)},
            {"index_bits": 8, "max_code_length": 9},
        ),
    ]
    return [(compress.save_bytes(layers, METADATA, **kwargs), layers) for layers, kwargs in configs]


def extreme_files() -> list[tuple[bytes, dict[str, CompressedMatrix]]]:
    """Small valid files at the format's extremes: rows of nothing but fillers, and streams of
    one segment of the maximum size (with the fuzz metadata, like `small_files`)."""
    files = []
    for data, layers in (all_filler_rows(3, 12), maximum_segments(1, 150)):
        header, tensors = unpack(data)
        header["metadata"] = METADATA
        files.append((pack(header, tensors), layers))
    return files


def outcome(data: bytes, layers: dict[str, CompressedMatrix]) -> str:
    """'round trip' or the CompressedFileError subclass; anything else fails the test."""
    try:
        loaded = compress.load(data)
    except CompressedFileError as exc:
        return type(exc).__name__
    assert list(loaded) == list(layers) and loaded.metadata == METADATA
    assert all(loaded[name].equals(matrix) for name, matrix in layers.items()), "silently wrong weights"
    return "round trip"


def huffman_outcome(data: bytes, layers: dict[str, CompressedMatrix]) -> str:
    """As `outcome`, loading the `HuffmanLayer`s: they must decode to the original layers."""
    try:
        loaded = compress.load(data, keep_huffman=True)
    except CompressedFileError as exc:
        return type(exc).__name__
    assert list(loaded) == list(layers) and loaded.metadata == METADATA
    assert all(decode_huffman(loaded[name]).equals(m) for name, m in layers.items()), "silently wrong weights"
    return "round trip"


def refused(data: bytes, layers: dict[str, CompressedMatrix]) -> str:
    """A container bomb: only a `CompressedFileError` will do."""
    try:
        compress.load(data)
    except CompressedFileError as exc:
        return type(exc).__name__
    raise AssertionError("a container bomb loaded")


def container_bomb(data: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(4))
    if kind == 0:
        return many_tensor_entries(data, int(rng.integers(1, 3000)))
    if kind == 1:
        return nested_lists(data, int(rng.integers(1, 20_000)))
    if kind == 2:
        return flat_list(data, int(rng.integers(1, 20_000)))
    return huge_number(data, int(rng.integers(1, 20_000)))


def forged_outcome(data: bytes, layers: dict[str, CompressedMatrix], keep_huffman: bool = False) -> str:
    try:
        loaded = compress.load(data, keep_huffman=keep_huffman)
    except CompressedFileError as exc:
        return type(exc).__name__
    assert list(loaded) == list(layers)
    if keep_huffman:
        loaded = {name: decode_huffman(layer) for name, layer in loaded.items()}
    for name, matrix in layers.items():
        assert isinstance(loaded[name], CompressedMatrix) and loaded[name].shape == matrix.shape
    same = all(loaded[name].equals(matrix) for name, matrix in layers.items())
    return "round trip" if same else "valid layers, other weights"


def flip_bits(data: bytes, rng: np.random.Generator, low: int, high: int, count: int) -> bytes:
    mutated = bytearray(data)
    for _ in range(count):
        position = int(rng.integers(low, high))
        mutated[position] ^= 1 << int(rng.integers(8))
    return bytes(mutated)


def overwrite_bytes(data: bytes, rng: np.random.Generator, low: int, high: int, count: int) -> bytes:
    mutated = bytearray(data)
    for _ in range(count):
        mutated[int(rng.integers(low, high))] = int(rng.integers(256))
    return bytes(mutated)


def splice(data: bytes, rng: np.random.Generator) -> bytes:
    position = int(rng.integers(len(data)))
    if rng.random() < 0.5:
        return (
            data[:position]
            + bytes(rng.integers(0, 256, size=int(rng.integers(1, 9)), dtype=np.uint8))
            + data[position:]
        )
    return data[:position] + data[position + int(rng.integers(1, 9)) :]


def forge(data: bytes, rng: np.random.Generator) -> bytes:
    """Mutate one tensor (or one header number) and recompute every checksum."""
    header, tensors = unpack(data)
    if rng.random() < 0.8:
        name = sorted(tensors)[int(rng.integers(len(tensors)))]
        raw = tensors[name].view(np.uint8).reshape(-1)
        if raw.size:
            for _ in range(int(rng.integers(1, 4))):
                raw[int(rng.integers(raw.size))] ^= 1 << int(rng.integers(8))
    else:
        layer = header["layers"][int(rng.integers(len(header["layers"])))]
        stream = layer[["z", "codes"][int(rng.integers(2))]]
        key = sorted(stream)[int(rng.integers(len(stream)))]
        stream[key] += int(rng.choice([-2, -1, 1, 2, 31, 32]))
    return pack(header, tensors)


def fuzz(scale: int = 1, seed: int = SEED) -> dict[str, Counter]:
    """Run the campaign; returns outcome counts per mutation class."""
    rng = np.random.default_rng(seed)
    files = small_files() + extreme_files()
    counts: dict[str, Counter] = {}

    def run(kind: str, mutate, check=outcome) -> None:
        tally = counts.setdefault(kind, Counter())
        for data, layers in files:
            for mutated in mutate(data):
                tally[check(mutated, layers)] += 1

    run("truncate at every byte", lambda d: (d[:end] for end in range(len(d))))
    run(
        "flip 1-4 bits anywhere",
        lambda d: (flip_bits(d, rng, 0, len(d), int(rng.integers(1, 5))) for _ in range(300 * scale)),
    )
    run(
        "flip 1-4 bits in the header",
        lambda d: (
            flip_bits(d, rng, 0, data_section(d)[0], int(rng.integers(1, 5))) for _ in range(150 * scale)
        ),
    )
    run(
        "flip 1-4 bits in the tensors",
        lambda d: (flip_bits(d, rng, *data_section(d), int(rng.integers(1, 5))) for _ in range(150 * scale)),
    )
    run(
        "overwrite 1-3 bytes anywhere",
        lambda d: (overwrite_bytes(d, rng, 0, len(d), int(rng.integers(1, 4))) for _ in range(100 * scale)),
    )
    run("insert or delete bytes", lambda d: (splice(d, rng) for _ in range(50 * scale)))
    run(
        "mutate a tensor, forge checksums",
        lambda d: (forge(d, rng) for _ in range(100 * scale)),
        forged_outcome,
    )
    run(
        "flip 1-4 bits, keep_huffman=True",
        lambda d: (flip_bits(d, rng, 0, len(d), int(rng.integers(1, 5))) for _ in range(60 * scale)),
        huffman_outcome,
    )
    run(
        "forge checksums, keep_huffman=True",
        lambda d: (forge(d, rng) for _ in range(40 * scale)),
        lambda data, layers: forged_outcome(data, layers, keep_huffman=True),
    )
    run("container bombs", lambda d: (container_bomb(d, rng) for _ in range(20 * scale)), refused)
    counts["checkpoint dense file"] = fuzz_dense_file(rng, 300 * scale)
    return counts


def fuzz_dense_file(rng: np.random.Generator, count: int) -> Counter:
    """Mutate the dense file of a small checkpoint (truncations, bit flips, overwrites, splices):
    `load_compressed` must give the saved model exactly or raise a `CompressedFileError`."""
    import dc_kernels  # the checkpoint format is dc_kernels'; compress's tests do not need it otherwise

    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    dc_kernels.compress_(model, compress.DeepCompressionConfig(skip=("2",)))
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(SEED))
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory() as directory, torch.no_grad():
        dc_kernels.save_compressed(model, directory)
        expected = model(x)
        (path,) = Path(directory).glob("dense*.safetensors")
        data = path.read_bytes()
        for i in range(count):
            kind = i % 4
            if kind == 0:
                mutated = data[: int(rng.integers(len(data)))]
            elif kind == 1:
                mutated = flip_bits(data, rng, 0, len(data), int(rng.integers(1, 5)))
            elif kind == 2:
                mutated = overwrite_bytes(data, rng, 0, len(data), int(rng.integers(1, 4)))
            else:
                mutated = splice(data, rng)
            path.write_bytes(mutated)
            fresh = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
            try:
                dc_kernels.load_compressed(fresh, directory)
            except CompressedFileError as exc:
                tally[type(exc).__name__] += 1
                continue
            assert torch.equal(fresh(x), expected), "silently wrong weights"
            tally["round trip"] += 1
    return tally


def report(counts: dict[str, Counter], seconds: float) -> str:
    total = sum(sum(c.values()) for c in counts.values())
    lines = [f"fuzzed {total} mutated files in {seconds:.1f} s (seed {SEED})"]
    for kind, tally in counts.items():
        lines.append(f"  {kind:<36} " + ", ".join(f"{k}: {v}" for k, v in sorted(tally.items())))
    return "\n".join(lines)


def test_fuzz_loader():
    start = time.perf_counter()
    counts = fuzz()
    print("\n" + report(counts, time.perf_counter() - start))
    mutated = sum(sum(c.values()) for kind, c in counts.items() if not kind.startswith("truncate"))
    assert mutated >= 2000  # beside the truncations
    # Checksums catch every unforged mutation outside the container's own slack.
    for kind, tally in counts.items():
        if kind.startswith(("flip", "overwrite")):
            assert tally["round trip"] <= sum(tally.values()) // 100, (kind, tally)
    assert counts["truncate at every byte"].keys() == {"TruncatedFileError"}


if __name__ == "__main__":
    begin = time.perf_counter()
    result = fuzz(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    print(report(result, time.perf_counter() - begin))
