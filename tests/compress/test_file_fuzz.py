"""Seeded mutation fuzzing of `compress.load`.

Small files are truncated at every byte and mutated (bit flips and byte overwrites anywhere, in
the header, in the tensor data; byte insertions and deletions). Every outcome must be an exact
round trip or a `CompressedFileError`: never another exception, a hang or different weights.
A last class forges the checksums after mutating a tensor, so that the checks behind them run;
there a load may succeed with other weights (the checksum is what catches that), but it must
still return valid layers of the header's shapes or raise a `CompressedFileError`.

Run ``python -m tests.compress.test_file_fuzz [scale]`` for a longer campaign (scale x the CI
counts); both print the outcome counts.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import numpy as np

import compress
from compress import CompressedFileError, CompressedMatrix
from tests.compress.file_surgery import data_section, pack, unpack
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


def outcome(data: bytes, layers: dict[str, CompressedMatrix]) -> str:
    """'round trip' or the CompressedFileError subclass; anything else fails the test."""
    try:
        loaded = compress.load(data)
    except CompressedFileError as exc:
        return type(exc).__name__
    assert list(loaded) == list(layers) and loaded.metadata == METADATA
    assert all(loaded[name].equals(matrix) for name, matrix in layers.items()), "silently wrong weights"
    return "round trip"


def forged_outcome(data: bytes, layers: dict[str, CompressedMatrix]) -> str:
    try:
        loaded = compress.load(data)
    except CompressedFileError as exc:
        return type(exc).__name__
    assert list(loaded) == list(layers)
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
    files = small_files()
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
    return counts


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
