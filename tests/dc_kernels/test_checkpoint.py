"""Checkpoints: `save_compressed` / `load_compressed` round trips, tied weights and shared
modules, GPU forms, damaged files, foreign metadata, files that disagree, and replacing a model
whole (interrupted, concurrent)."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import safetensors.numpy
import safetensors.torch
import torch
from torch import nn

import compress
import dc_kernels
from compress.file_errors import CompressedFileError, CorruptStreamError
from dc_kernels.checkpoint import COMPRESSED_FILE, DENSE_FILE, _tensor_record
from tests.dc_kernels.models import CONFIG, MLP, MODELS, decompressed, rel_error
from workloads import random_compressed_matrix


def dense_path(directory) -> Path:
    """The one dense file of a checkpoint directory."""
    (path,) = directory.glob("dense*.safetensors")
    return path


@torch.no_grad()
def test_save_and_load_into_a_meta_model(compressed, tmp_path):
    kind, model, x = compressed
    written = dc_kernels.save_compressed(model, tmp_path)
    assert written == sum(p.stat().st_size for p in tmp_path.iterdir())
    with torch.device("meta"):
        fresh = MODELS[kind][0]().eval()
    report = dc_kernels.load_compressed(fresh, tmp_path)
    assert set(report.converted) == MODELS[kind][2]
    assert not any(t.is_meta for t in fresh.state_dict().values())
    assert torch.equal(fresh(x), model(x))
    assert rel_error(fresh(x), decompressed(model)(x)) <= 1e-5


def test_gpu_form_is_saved_and_loaded(tmp_path):
    model = MLP()
    dc_kernels.compress_(model, compress.DeepCompressionConfig(layers={"2": {"gpu_form": "huffman"}}))
    assert [model[i].gpu_form for i in (0, 2, 4)] == ["fixed", "huffman", "fixed"]
    dc_kernels.save_compressed(model, tmp_path)
    with torch.device("meta"):
        fresh = MLP()
    dc_kernels.load_compressed(fresh, tmp_path)
    assert [fresh[i].gpu_form for i in (0, 2, 4)] == ["fixed", "huffman", "fixed"]


@torch.no_grad()
def test_tied_weights_are_saved_once(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 16)
            self.body = nn.Linear(16, 16)
            self.lm_head = nn.Linear(16, 20, bias=False)
            self.lm_head.weight = self.embed.weight

        def forward(self, ids):
            return self.lm_head(torch.relu(self.body(self.embed(ids))))

    model = Tied()
    dc_kernels.compress_(model, compress.DeepCompressionConfig(skip=("lm_head",)))
    dc_kernels.save_compressed(model, tmp_path)
    assert set(safetensors.numpy.load_file(dense_path(tmp_path))) == {"embed.weight", "body.bias"}
    with torch.device("meta"):
        fresh = Tied()
    dc_kernels.load_compressed(fresh, tmp_path)
    assert fresh.lm_head.weight is fresh.embed.weight
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(fresh(ids), model(ids))


def test_load_refuses_damaged_files_and_other_models(tmp_path):
    model = MLP()
    dc_kernels.compress_(model, CONFIG)
    dc_kernels.save_compressed(model, tmp_path)
    compressed_bytes = (tmp_path / COMPRESSED_FILE).read_bytes()
    dense_file = dense_path(tmp_path)
    dense_bytes = dense_file.read_bytes()

    with pytest.raises(ValueError, match="'4' is 64x64 in the model, 10x64 in the file"):
        other = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64))
        dc_kernels.load_compressed(other, tmp_path)
    with pytest.raises(ValueError, match=r"missing \['5.weight', '5.bias'\]"):
        dc_kernels.load_compressed(MLP().append(nn.Linear(10, 3)), tmp_path)

    dense_file.write_bytes(dense_bytes[:-5] + bytes(5))  # values changed, sizes kept
    with pytest.raises(CorruptStreamError, match="differs from its record"):
        dc_kernels.load_compressed(MLP(), tmp_path)
    dense_file.write_bytes(dense_bytes[:100])
    with pytest.raises(CompressedFileError, match="not a readable safetensors"):
        dc_kernels.load_compressed(MLP(), tmp_path)
    dense_file.unlink()
    with pytest.raises(FileNotFoundError):
        dc_kernels.load_compressed(MLP(), tmp_path)
    dense_file.write_bytes(dense_bytes)
    (tmp_path / COMPRESSED_FILE).write_bytes(compressed_bytes[: len(compressed_bytes) // 2])
    with pytest.raises(CompressedFileError):
        dc_kernels.load_compressed(MLP(), tmp_path)


def test_foreign_metadata_is_refused(tmp_path):
    layers = {"0": random_compressed_matrix(64, 32, 0.1, 4)}
    safetensors.numpy.save_file({}, tmp_path / DENSE_FILE)
    for metadata in (
        None,
        {"dc_kernels": 1},
        {"dc_kernels": 1, "modules": [], "dense_file": DENSE_FILE, "dense": {}, "aliases": {}},
    ):
        compress.save(tmp_path / COMPRESSED_FILE, layers, metadata)
        with pytest.raises(CompressedFileError, match="model metadata"):
            dc_kernels.load_compressed(MLP(), tmp_path)
    assert json.dumps(CONFIG.to_dict())  # the config that wrote the other files is plain data


class SharedBody(nn.Module):
    """One Linear registered under two names (called twice), and a head."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(16, 16)
        self.again = self.first
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.again(torch.relu(self.first(x))))


@torch.no_grad()
def test_a_module_shared_under_two_names_round_trips(tmp_path):
    model = SharedBody()
    dc_kernels.compress_(model, CONFIG)
    assert model.first is model.again
    dc_kernels.save_compressed(model, tmp_path)
    assert set(compress.load(tmp_path / COMPRESSED_FILE)) == {"first", "head"}  # stored once
    with torch.device("meta"):
        fresh = SharedBody()
    report = dc_kernels.load_compressed(fresh, tmp_path)
    assert set(report.converted) == {"first", "again", "head"}
    assert fresh.first is fresh.again and isinstance(fresh.first, dc_kernels.CompressedLinear)
    x = torch.randn(3, 16)
    assert torch.equal(fresh(x), model(x))


def forge(directory: Path, edit_metadata=None, edit_dense=None) -> None:
    """Rewrite a checkpoint with edited metadata and dense tensors, every record and checksum
    consistent: only the cross-file checks can catch what the edit planted."""
    loaded = compress.load(directory / COMPRESSED_FILE)
    metadata = loaded.metadata
    dense = safetensors.torch.load_file(directory / metadata["dense_file"])
    if edit_dense is not None:
        edit_dense(dense)
    metadata["dense"] = {key: _tensor_record(tensor) for key, tensor in dense.items()}
    if edit_metadata is not None:
        edit_metadata(metadata)
    safetensors.torch.save_file(dense, directory / metadata["dense_file"])
    compress.save(directory / COMPRESSED_FILE, dict(loaded), metadata)


@pytest.mark.parametrize(
    ("edit_metadata", "edit_dense", "message"),
    [
        (None, lambda d: d.pop("0.bias"), "declares a bias that the dense file lacks"),
        (lambda m: m["modules"]["2"].update(bias=False), None, "'2.bias' is stored but the compressed layer"),
        (None, lambda d: d.update({"2.codebook": torch.zeros(4)}), "'2.codebook' would replace a buffer"),
        (lambda m: m["aliases"].update({"4.codes": "0.bias"}), None, "'4.codes' would replace a buffer"),
        (None, lambda d: d.update({"0.bias": torch.zeros(3)}), r"'0' must be a float tensor of shape \[64\]"),
        (None, lambda d: d.update({"0.bias": torch.zeros(64, dtype=torch.int32)}), "must be a float tensor"),
        (lambda m: m["module_aliases"].update({"1": "9"}), None, "module_aliases must map"),
        (lambda m: m.update(dense_file="../dense.safetensors"), None, "dense_file must be a name like"),
        (lambda m: m.update({"dc_kernels": 3}), None, "version"),
    ],
)  # fmt: skip
def test_the_two_files_are_checked_against_each_other(tmp_path, edit_metadata, edit_dense, message):
    model = MLP()
    dc_kernels.compress_(model, CONFIG)
    dc_kernels.save_compressed(model, tmp_path)
    forge(tmp_path, edit_metadata, edit_dense)
    with pytest.raises(CompressedFileError, match=message):
        dc_kernels.load_compressed(MLP(), tmp_path)


def test_checkpoints_of_metadata_version_1_still_load(tmp_path):
    model = MLP()
    dc_kernels.compress_(model, CONFIG)
    dc_kernels.save_compressed(model, tmp_path)
    hashed = dense_path(tmp_path)

    def version_1(metadata):
        del metadata["module_aliases"]
        metadata.update({"dc_kernels": 1, "dense_file": DENSE_FILE})

    forge(tmp_path, version_1)
    hashed.unlink()
    fresh = MLP()
    dc_kernels.load_compressed(fresh, tmp_path)
    x = torch.randn(2, 32)
    assert torch.equal(fresh(x), model(x))


def two_models() -> tuple[nn.Module, nn.Module]:
    first, second = MLP(), MLP()
    dc_kernels.compress_(first, CONFIG)
    dc_kernels.compress_(second, compress.DeepCompressionConfig(density=0.3, bits=3))
    return first, second


def loads_as(directory: Path, candidates: tuple[nn.Module, ...]) -> int:
    """Which candidate the checkpoint in ``directory`` is (it must be one of them, whole)."""
    fresh = MLP()
    dc_kernels.load_compressed(fresh, directory)
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        matches = [i for i, model in enumerate(candidates) if torch.equal(fresh(x), model(x))]
    assert len(matches) == 1
    return matches[0]


def test_save_replaces_a_model_as_a_whole(tmp_path, monkeypatch):
    old, new = two_models()
    dc_kernels.save_compressed(old, tmp_path)
    dc_kernels.save_compressed(new, tmp_path)
    assert loads_as(tmp_path, (old, new)) == 1
    assert len(list(tmp_path.iterdir())) == 2  # the old dense file went with the old model
    # Interrupted at each rename (the dense file, then the commit), or after the commit.
    real_replace = os.replace
    for failing in (1, 2):
        dc_kernels.save_compressed(old, tmp_path)
        calls = []

        def replace(source, target, failing=failing, calls=calls):
            calls.append(target)
            if len(calls) == failing:
                raise OSError("simulated crash")
            real_replace(source, target)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(OSError, match="simulated crash"):
            dc_kernels.save_compressed(new, tmp_path)
        monkeypatch.setattr(os, "replace", real_replace)
        assert loads_as(tmp_path, (old, new)) == 0
        assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    monkeypatch.setattr(
        Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(OSError("crash"))
    )
    with pytest.raises(OSError, match="crash"):
        dc_kernels.save_compressed(new, tmp_path)
    monkeypatch.undo()
    assert loads_as(tmp_path, (old, new)) == 1


def test_concurrent_saves_leave_one_whole_model(tmp_path):
    models = two_models()

    def save(i: int) -> None:
        for _ in range(3):
            dc_kernels.save_compressed(models[i % 2], tmp_path)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(save, range(4)))
    assert loads_as(tmp_path, models) in (0, 1)
    assert not list(tmp_path.glob(".*"))


class WithBuffers(nn.Module):
    """A Linear and non-persistent buffers computed at construction (like BERT's position_ids)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 8)
        self.register_buffer("positions", torch.arange(16, dtype=torch.float32) / 16, persistent=False)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.fc(x + self.positions) * self.scale


@torch.no_grad()
def test_non_persistent_buffers_are_restored_into_a_meta_model(tmp_path):
    model = WithBuffers()
    dc_kernels.compress_(model, CONFIG)
    dc_kernels.save_compressed(model, tmp_path)
    with torch.device("meta"):
        fresh = WithBuffers()
    report = dc_kernels.load_compressed(fresh, tmp_path)
    x = torch.randn(3, 16)
    assert torch.equal(fresh(x), model(x)) and "positions" in fresh._non_persistent_buffers_set
    assert report.disk_after == sum(p.stat().st_size for p in tmp_path.iterdir())
    assert report.memory_after > 0 and "whole model on disk" in str(report)


def test_a_file_without_stored_buffers_refuses_to_leave_tensors_on_meta(tmp_path):
    model = WithBuffers()
    dc_kernels.compress_(model, CONFIG)
    dc_kernels.save_compressed(model, tmp_path)
    loaded = compress.load(tmp_path / COMPRESSED_FILE)
    metadata = dict(loaded.metadata)
    del metadata["buffers"]  # as written by earlier versions
    dense = safetensors.torch.load_file(tmp_path / metadata["dense_file"])
    del dense["positions"]
    metadata["dense"] = {k: v for k, v in metadata["dense"].items() if k != "positions"}
    safetensors.torch.save_file(dense, tmp_path / metadata["dense_file"])
    compress.save(tmp_path / COMPRESSED_FILE, dict(loaded), metadata)
    with torch.device("meta"):
        fresh = WithBuffers()
    with pytest.raises(ValueError, match=r"still on the meta device .*\['positions'\]"):
        dc_kernels.load_compressed(fresh, tmp_path)
    dc_kernels.load_compressed(WithBuffers(), tmp_path)  # built on the CPU, the model has its own


def test_saving_an_uncompressed_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no CompressedLinear layer.*compress_"):
        dc_kernels.save_compressed(MLP(), tmp_path)
    assert not (tmp_path / COMPRESSED_FILE).exists()
