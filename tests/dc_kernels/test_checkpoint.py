"""Checkpoints: `save_compressed` / `load_compressed` round trips, tied weights, GPU forms,
damaged files and foreign metadata."""


import json

import pytest
import safetensors.numpy
import safetensors.torch
import torch
from torch import nn

import compress
import dc_kernels
from compress.file_errors import CompressedFileError, CorruptStreamError
from dc_kernels.checkpoint import COMPRESSED_FILE, DENSE_FILE
from tests.dc_kernels.models import CONFIG, MLP, MODELS, decompressed, rel_error
from workloads import random_compressed_matrix


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
    assert set(safetensors.numpy.load_file(tmp_path / DENSE_FILE)) == {"embed.weight", "body.bias"}
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
    dense_bytes = (tmp_path / DENSE_FILE).read_bytes()

    with pytest.raises(ValueError, match="'4' is 64x64 in the model, 10x64 in the file"):
        other = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 64))
        dc_kernels.load_compressed(other, tmp_path)
    with pytest.raises(ValueError, match=r"missing \['5.weight', '5.bias'\]"):
        dc_kernels.load_compressed(MLP().append(nn.Linear(10, 3)), tmp_path)

    (tmp_path / DENSE_FILE).write_bytes(dense_bytes[:-5] + bytes(5))  # values changed, sizes kept
    with pytest.raises(CorruptStreamError, match="differs from its record"):
        dc_kernels.load_compressed(MLP(), tmp_path)
    (tmp_path / DENSE_FILE).write_bytes(dense_bytes[:100])
    with pytest.raises(CompressedFileError, match="not a readable safetensors"):
        dc_kernels.load_compressed(MLP(), tmp_path)
    (tmp_path / DENSE_FILE).write_bytes(dense_bytes)
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
    dense = safetensors.torch.load_file(tmp_path / DENSE_FILE)
    del dense["positions"]
    metadata["dense"] = {k: v for k, v in metadata["dense"].items() if k != "positions"}
    safetensors.torch.save_file(dense, tmp_path / DENSE_FILE)
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
