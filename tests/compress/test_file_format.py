import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import compress
from compress import (
    CompressedFileError,
    CompressedMatrix,
    CorruptStreamError,
    InvalidHeaderError,
    TruncatedFileError,
    UnsupportedVersionError,
)
from compress.relative_index_huffman import HuffmanLayer, decode_huffman
from tests.compress.file_surgery import data_section, pack, unpack
from workloads import random_compressed_matrix


def sample_layers() -> dict[str, CompressedMatrix]:
    return {
        "fc1": random_compressed_matrix(20, 30, 0.3, 3, seed=1),
        "fc2.weight": random_compressed_matrix(7, 200, 0.05, 5, seed=2),
        "one code": random_compressed_matrix(3, 9, 0.5, 2, seed=3, codebook_size=1),
    }


@pytest.fixture(scope="module")
def layers() -> dict[str, CompressedMatrix]:
    return sample_layers()


@pytest.fixture(scope="module")
def data(layers) -> bytes:
    return compress.save_bytes(layers, {"model": "test", "epoch": 3}, index_bits=4, segment_symbols=16)


def assert_same(loaded, layers):
    assert list(loaded) == list(layers)
    for name, matrix in layers.items():
        assert loaded[name].equals(matrix), name


def test_round_trip_path_and_bytes(tmp_path, layers, data):
    path = tmp_path / "model.dcz"
    size = compress.save(path, layers, {"model": "test", "epoch": 3}, index_bits=4, segment_symbols=16)
    assert size == path.stat().st_size == len(data)  # bytes differ: safetensors orders metadata keys freely
    assert not list(tmp_path.glob("*.tmp"))
    for source in (path, str(path), data, bytearray(data), memoryview(data)):
        loaded = compress.load(source)
        assert_same(loaded, layers)
        assert loaded.metadata == {"model": "test", "epoch": 3}
        assert loaded.library_version == compress.__version__ and loaded.format_version == 1


def test_keep_huffman_returns_the_streams(layers, data):
    loaded = compress.load(data, keep_huffman=True)
    for name, matrix in layers.items():
        assert isinstance(loaded[name], HuffmanLayer)
        assert loaded[name].z.segment_symbols == 16 and loaded[name].index_bits == 4
        assert decode_huffman(loaded[name]).equals(matrix)


@settings(max_examples=25, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 70)), min_size=0, max_size=3),
    density=st.floats(1e-4, 1.0),
    bits=st.integers(1, 8),
    index_bits=st.integers(1, 8),
    max_code_length=st.integers(8, 16),
    segment=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_round_trip_random_layers(shapes, density, bits, index_bits, max_code_length, segment, seed):
    layers = {
        f"layer{i}": random_compressed_matrix(r, c, density, bits, seed=seed + i)
        for i, (r, c) in enumerate(shapes)
    }
    data = compress.save_bytes(
        layers, None, index_bits=index_bits, max_code_length=max_code_length, segment_symbols=segment
    )
    loaded = compress.load(data)
    assert_same(loaded, layers)
    assert loaded.metadata is None


def test_every_code_width_and_per_layer_index_bits():
    layers = {
        f"b{bits}": random_compressed_matrix(9, 40, 0.2 * (bits % 5 + 1), bits, seed=bits)
        for bits in range(1, 9)
    }
    index_bits = {f"b{bits}": bits % 7 + 2 for bits in range(1, 9)}
    loaded = compress.load(compress.save_bytes(layers, index_bits=index_bits), keep_huffman=True)
    for name, layer in loaded.items():
        assert layer.index_bits == index_bits[name]
        assert decode_huffman(layer).equals(layers[name])


def test_empty_and_weightless_layers():
    empty = CompressedMatrix.from_dense(np.zeros((3, 5), bool), np.zeros((3, 5), int), [1.0, 2.0])
    assert_same(compress.load(compress.save_bytes({"empty": empty})), {"empty": empty})
    assert compress.load(compress.save_bytes({})) == {}


def test_save_rejects_bad_arguments(tmp_path, layers):
    with pytest.raises(TypeError, match="mapping"):
        compress.save_bytes([layers["fc1"]])
    with pytest.raises(TypeError, match="must be a CompressedMatrix"):
        compress.save_bytes({"x": layers["fc1"].to_dense()})
    with pytest.raises(TypeError, match="non-empty strings"):
        compress.save_bytes({"": layers["fc1"]})
    with pytest.raises(TypeError, match="JSON-serializable"):
        compress.save_bytes(layers, {"bad": float("nan")})
    with pytest.raises(ValueError, match=r"no width for layer 'fc2\.weight'"):
        compress.save_bytes(layers, index_bits={"fc1": 4})
    with pytest.raises(TypeError, match="JSON-serializable"):
        compress.save(tmp_path / "x", layers, {"bad": object()})
    assert not list(tmp_path.iterdir())
    with pytest.raises(TypeError, match="path or bytes"):
        compress.load(42)
    with pytest.raises(FileNotFoundError):
        compress.load(tmp_path / "missing.dcz")


# ----------------------------------------------------------------------------- corruption
def test_truncation_at_every_byte(data):
    for end in range(len(data)):
        with pytest.raises(TruncatedFileError):
            compress.load(data[:end])


def edited(data: bytes, edit, *, fix_crc: bool = True) -> bytes:
    header, tensors = unpack(data)
    edit(header, tensors)
    return pack(header, tensors, fix_crc=fix_crc)


def expect(data: bytes, error: type, *fragments: str) -> CompressedFileError:
    with pytest.raises(error) as info:
        compress.load(data)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return info.value


def set_layer(index, key, value):
    def edit(header, tensors):
        header["layers"][index][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "error", "fragments"),
    [
        (set_layer(0, "bits", "3"), InvalidHeaderError, ["'fc1'", "'bits'", "got '3'"]),
        (set_layer(1, "bits", 9), InvalidHeaderError, ["'fc2.weight'", "'bits'", "1..8"]),
        (set_layer(0, "index_bits", 0), InvalidHeaderError, ["'fc1'", "'index_bits'"]),
        (set_layer(0, "codebook_size", 9), InvalidHeaderError, ["'fc1'", "'codebook_size'", "1..8"]),
        (set_layer(0, "shape", [20]), InvalidHeaderError, ["'fc1'", "'shape'"]),
        (set_layer(0, "shape", [20, 2**31]), InvalidHeaderError, ["'fc1'", "'shape'"]),
        (set_layer(0, "nnz", 10**9), InvalidHeaderError, ["'fc1'", "'nnz'", "0..600"]),
        (set_layer(0, "extra", 1), InvalidHeaderError, ["'fc1'", "'extra'", "unknown field"]),
        (set_layer(2, "name", "fc1"), InvalidHeaderError, ["'fc1'", "duplicate"]),
        (lambda h, t: h["layers"][0].pop("crc32"), InvalidHeaderError, ["'fc1'", "'crc32'", "missing"]),
        (
            lambda h, t: h["layers"][0]["z"].pop("total_bits"),
            InvalidHeaderError,
            ["'z.total_bits'", "missing"],
        ),
        (
            lambda h, t: h["layers"][0]["codes"].update(symbols=1),
            InvalidHeaderError,
            ["'codes.symbols'", "nnz="],
        ),
        (
            lambda h, t: h["layers"][0]["z"].update(segment_symbols=0),
            InvalidHeaderError,
            ["'z.segment_symbols'"],
        ),
        (
            lambda h, t: h["layers"][0]["z"].update(max_code_length=17),
            InvalidHeaderError,
            ["'z.max_code_length'"],
        ),
        (lambda h, t: h.update(format="other"), InvalidHeaderError, ["'format'"]),
        (lambda h, t: h.update(format_version=2), UnsupportedVersionError, ["version 2 is not supported"]),
        (lambda h, t: h.pop("library_version"), InvalidHeaderError, ["'library_version'", "missing"]),
        (lambda h, t: h.update(layers={}), InvalidHeaderError, ["'layers'", "list"]),
        (
            lambda h, t: t.update(extra=np.zeros(2, np.uint8)),
            InvalidHeaderError,
            ["unexpected tensors", "extra"],
        ),
        (lambda h, t: t.pop("1.z.offsets"), InvalidHeaderError, ["'fc2.weight'", "'z.offsets'", "missing"]),
        (
            lambda h, t: t.update({"0.row_ptr": t["0.row_ptr"].astype(np.int32)}),
            InvalidHeaderError,
            ["'fc1'", "'row_ptr'", "I32"],
        ),
    ],
)
def test_header_defects(data, edit, error, fragments):
    expect(edited(data, edit), error, *fragments)


def swap_row_ptr(header, tensors):
    tensors["0.row_ptr"][[3, 4]] = tensors["0.row_ptr"][[4, 3]]


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (swap_row_ptr, ["'fc1'", "'row_ptr'", "must not decrease"]),
        (lambda h, t: t["0.row_ptr"].__setitem__(-1, 10**6), ["'fc1'", "'row_ptr'", "last 1000000"]),
        (
            lambda h, t: t["0.row_ptr"].__setitem__(slice(1, 3), [2**46, -(2**63) + 5]),
            ["'fc1'", "'row_ptr'", "range [-9223372036854775803, 70368744177664]"],
        ),
        (lambda h, t: t["1.codebook"].__setitem__(0, np.nan), ["'fc2.weight'", "'codebook'", "NaN"]),
        (lambda h, t: t["0.z.lengths"].__setitem__(0, 15), ["'fc1'", "'z.lengths'", "Kraft"]),
        (lambda h, t: t["0.z.offsets"].__setitem__(2, 0), ["'fc1'", "'z.offsets'", "segment 1"]),
        (
            lambda h, t: t["2.codes.lengths"].__setitem__(slice(None), [1, 1, 0, 0]),
            ["'one code'", "code 1", "codebook_size=1"],
        ),
        (
            lambda h, t: h["layers"][0].update(shape=[20, 10]),
            ["'fc1'", "'z.words'", "outside in_features=10"],
        ),
    ],
)
def test_stream_defects_behind_valid_checksums(data, edit, fragments):
    expect(edited(data, edit), CorruptStreamError, *fragments)


def test_codes_beyond_the_codebook(layers):
    # All 8 codes of a 3-bit layer are in use; a header and codebook that claim only 6 entries
    # leave codes 6 and 7 without a weight.
    def shrink(header, tensors):
        header["layers"][0]["codebook_size"] = 6
        tensors["0.codebook"] = tensors["0.codebook"][:6].copy()

    data = compress.save_bytes({"fc1": layers["fc1"]})
    expect(edited(data, shrink), CorruptStreamError, "'fc1'", "'codes.lengths'", "code 6", "codebook_size=6")


def test_decoded_lengths_must_match_the_header(data):
    def one_more_entry(header, tensors):
        layer = header["layers"][0]
        layer["entries"] += 1
        layer["z"]["symbols"] += 1
        tensors["0.row_ptr"][-1] += 1

    expect(edited(data, one_more_entry), CorruptStreamError, "'fc1'", "'z.words'", "corrupt stream")

    def fewer_bits(header, tensors):
        header["layers"][1]["codes"]["total_bits"] -= 1

    error = expect(edited(data, fewer_bits), CompressedFileError, "'fc2.weight'")
    assert error.layer == "fc2.weight" and error.field.startswith("codes")


def test_checksums(data):
    start, end = data_section(data)
    for position in range(start, end, 7):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x10
        error = expect(bytes(corrupt), CorruptStreamError, "checksum mismatch")
        assert error.layer in ("fc1", "fc2.weight", "one code") and error.field
    header_at = data.index(b'\\"layers\\"')
    corrupt = bytearray(data)
    corrupt[header_at + 3] ^= 0x01  # "layers" -> "lamers": caught by the header checksum first
    expect(bytes(corrupt), CorruptStreamError, "'deep_compression_crc32'", "header checksum mismatch")


def test_absurd_sizes_are_refused_before_allocating(data):
    expect(b"\xff" * 8 + data[8:], InvalidHeaderError, "header length")
    huge = edited(data, set_layer(0, "shape", [2**61, 30]))
    expect(huge, InvalidHeaderError, "'fc1'", "'row_ptr'", str(2**61 + 1))
    many = edited(data, lambda h, t: h["layers"][1]["codes"].update(total_bits=2**32 - 1))
    expect(many, InvalidHeaderError, "'fc2.weight'", "'codes.words'", str(2**27))
    # A safetensors entry claiming 2**40 elements with a 4-byte span is refused from the table.
    length = int.from_bytes(data[:8], "little")
    table = json.loads(data[8 : 8 + length])
    first = next(name for name in table if name != "__metadata__")
    table[first]["shape"] = [2**40]
    text = json.dumps(table).encode()
    expect(
        len(text).to_bytes(8, "little") + text + data[8 + length :],
        InvalidHeaderError,
        first,
        str(2**40),
        "needs",
    )


def test_malformed_containers(data):
    length = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + length]
    expect(data[:8] + b"[" + header[1:] + data[8 + length :], InvalidHeaderError, "not valid JSON")
    expect(data + b"\0\0\0\0", InvalidHeaderError, "4 bytes after the last tensor")
    table = json.loads(header)
    table["__metadata__"]["other"] = "x"
    text = json.dumps(table).encode()
    expect(len(text).to_bytes(8, "little") + text + data[8 + length :], InvalidHeaderError, "__metadata__")
    table = json.loads(header)
    del table["__metadata__"]
    text = json.dumps(table).encode()
    expect(len(text).to_bytes(8, "little") + text + data[8 + length :], InvalidHeaderError, "__metadata__")
    deep = b"[" * 100_000 + b"]" * 100_000
    expect(len(deep).to_bytes(8, "little") + deep, InvalidHeaderError, "not valid JSON")
    for name in sorted(n for n in table if n != "__metadata__")[:1]:
        begin, end = table[name]["data_offsets"]
        table[name]["data_offsets"] = [begin + 1, end + 1]
    text = json.dumps({**table, "__metadata__": json.loads(header)["__metadata__"]}).encode()
    expect(len(text).to_bytes(8, "little") + text + data[8 + length :] + b"\0", InvalidHeaderError, "tile")


def test_errors_are_value_errors_naming_layer_and_field(data):
    error = expect(edited(data, set_layer(0, "bits", 0)), InvalidHeaderError)
    assert isinstance(error, ValueError) and isinstance(error, CompressedFileError)
    assert (error.layer, error.field) == ("fc1", "bits")
