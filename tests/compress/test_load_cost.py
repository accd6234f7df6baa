"""Loading costs what the file is worth: on valid files built to be as costly as the format
allows, and on container-header bombs, peak memory (tracemalloc: NumPy's and Python's
allocations) and CPU time stay within a constant per byte of file (plus the decoded layers and a
bounded working set). The bounds are 5-10x above what these files cost on the development
machine and 20x or more below what they cost before the loader was made linear (2 MB of 1-bit
fillers took ~0.8 GB; maximum-size segments ~200 us per byte).

``python -m tests.compress.test_load_cost`` prints what each file costs (docs/file_format.md)."""

import contextlib
import time
import tracemalloc

import pytest

import compress
from compress import CompressedFileError, InvalidHeaderError, LimitExceededError
from tests.compress.hostile_files import BOMBS, HOSTILE_VALID, filler_stream

# Bytes of peak memory per byte of file, per decoded weight, and the decoders' working set.
MEMORY_PER_FILE_BYTE = 40
MEMORY_PER_WEIGHT = 24
WORKING_SET = 16 << 20
BOMB_MEMORY_PER_BYTE = 32  # Python's JSON parser on the worst JSON for its size
SECONDS_PER_FILE_BYTE = 10e-6
SECONDS_FIXED = 0.05


def peak_memory(load) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result = load()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def cpu_seconds(load) -> float:
    start = time.process_time()
    load()
    return time.process_time() - start


@pytest.mark.parametrize("name", sorted(HOSTILE_VALID))
@pytest.mark.parametrize("keep_huffman", [False, True])
def test_valid_files_load_in_time_and_memory_linear_in_their_size(name, keep_huffman):
    for scale in (1, 3):
        data, layers = HOSTILE_VALID[name](scale)
        weights = sum(m.nnz for m in layers.values())
        peak, loaded = peak_memory(lambda data=data: compress.load(data, keep_huffman=keep_huffman))
        if keep_huffman:
            loaded = {k: compress.decode_huffman(v) for k, v in loaded.items()}
        assert all(loaded[k].equals(m) for k, m in layers.items())
        budget = MEMORY_PER_FILE_BYTE * len(data) + MEMORY_PER_WEIGHT * weights + WORKING_SET
        assert peak <= budget, f"{name} x{scale}: {peak} bytes at peak for a {len(data)}-byte file"
        seconds = cpu_seconds(lambda data=data: compress.load(data, keep_huffman=keep_huffman))
        assert seconds <= SECONDS_FIXED + SECONDS_PER_FILE_BYTE * len(data), (name, scale, len(data), seconds)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_container_bombs_are_refused_in_time_and_memory_linear_in_their_size(name):
    for scale in (1, 2):
        data = BOMBS[name](scale)

        def load(data=data):
            with pytest.raises(InvalidHeaderError):
                compress.load(data)

        peak, _ = peak_memory(load)
        assert peak <= BOMB_MEMORY_PER_BYTE * len(data) + (1 << 20), (name, scale, len(data), peak)
        assert cpu_seconds(load) <= SECONDS_FIXED + SECONDS_PER_FILE_BYTE * len(data)


def test_max_entries_caps_a_file_before_it_is_decoded():
    data, layers = filler_stream(1 << 17)
    entries = layers["fillers"].shape[1]  # every column is an entry: fillers and the one weight
    assert compress.load(data, max_entries=entries)["fillers"].equals(layers["fillers"])
    with pytest.raises(
        LimitExceededError, match=f"{entries} relative-index entries, more than max_entries=10"
    ):
        compress.load(data, max_entries=10)
    assert compress.load(data, max_entries=None)["fillers"].equals(layers["fillers"])
    with pytest.raises(TypeError, match="max_entries"):
        compress.load(data, max_entries=1.5)


def test_running_out_of_memory_is_a_file_error(monkeypatch):
    import compress.file_format as file_format

    def exhausted(*args):
        raise MemoryError

    monkeypatch.setattr(file_format, "decode_relative", exhausted)
    data, _ = filler_stream(1000)
    with pytest.raises(LimitExceededError, match="not enough memory") as caught:
        compress.load(data)
    assert isinstance(caught.value, CompressedFileError) and caught.value.layer == "fillers"


def measurements(scales=(1, 4)) -> list[str]:
    """A table of what each file costs to load (CPU time: median of 3; peak memory)."""
    lines = [
        f"{'file':<22} {'scale':>5} {'bytes':>9} {'ms':>8} {'us/byte':>8} {'peak MB':>8} {'peak/byte':>9}"
    ]
    cases = [(name, scale, *build(scale)) for name, build in HOSTILE_VALID.items() for scale in scales]
    cases += [(name, scale, build(scale), None) for name, build in BOMBS.items() for scale in scales]
    for name, scale, data, _ in cases:

        def load(data=data):
            with contextlib.suppress(CompressedFileError):
                compress.load(data)

        seconds = sorted(cpu_seconds(load) for _ in range(3))[1]
        peak, _ = peak_memory(load)
        lines.append(
            f"{name:<22} {scale:>5} {len(data):>9} {seconds * 1e3:>8.1f} {seconds / len(data) * 1e6:>8.2f} "
            f"{peak / 1e6:>8.2f} {peak / len(data):>9.1f}"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(measurements()))
