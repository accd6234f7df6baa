"""`CompressedLinear`'s per-layer GPU form: the "huffman" backend (under TRITON_INTERPRET=1)
against the reference backend, its choice by config and its report."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.config import DeepCompressionConfig
from compress.errors import ConfigError
from dc_kernels import CompressedLinear, compress_
from dc_kernels.backends import resolve
from workloads import random_compressed_matrix

ROOT = Path(__file__).resolve().parents[2]


def test_huffman_backend_matches_reference():
    matrix = random_compressed_matrix(12, 40, 0.3, 4, seed=5)
    bias = torch.randn(12)
    layer = CompressedLinear.from_matrix(matrix, bias, backend="huffman")
    x = torch.randn(3, 2, 40)
    y = layer(x)
    layer.backend = "reference"
    torch.testing.assert_close(y, layer(x), rtol=1e-5, atol=1e-6)
    layer.backend = "huffman"
    assert "backend='huffman'" in repr(layer)


def test_gpu_form_picks_the_cuda_backend():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # resolve never touches CUDA
    assert resolve("auto", cuda, "huffman").name == "huffman"
    assert resolve("auto", cuda, "fixed").name == "fixed"
    assert resolve("auto", cpu, "huffman").name == "cpu"
    layer = CompressedLinear.from_matrix(random_compressed_matrix(4, 9, 0.5, 3, seed=0), gpu_form="huffman")
    assert layer.gpu_form == "huffman" and "gpu_form='huffman'" in repr(layer)
    with pytest.raises(ValueError, match="gpu_form"):
        layer.gpu_form = "sparse"


def test_gpu_form_set_by_config_and_reported():
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    config = DeepCompressionConfig(density=0.3, bits=3, layers={"2": {"gpu_form": "huffman"}})
    report = compress_(model, config)
    assert report.converted["0"].gpu_form == "fixed" and report.converted["2"].gpu_form == "huffman"
    assert model[2].gpu_form == "huffman" and "huffman" in str(report)
    assert DeepCompressionConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="gpu_form must be a non-empty string"):
        DeepCompressionConfig(gpu_form="")
    # compress stores the name; the deployment side refuses an unknown form before changing anything
    typo = DeepCompressionConfig(density=0.3, bits=3, layers={"2": {"gpu_form": "hufman"}})
    fresh = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 5))
    with pytest.raises(ConfigError, match=r"layer '2': gpu_form must be one of .*'huffman'.*got 'hufman'"):
        compress_(fresh, typo)
    assert isinstance(fresh[0], nn.Linear)


def test_importing_dc_kernels_imports_no_triton_and_no_cuda():
    code = (
        "import sys, torch, dc_kernels\n"
        "from dc_kernels import HuffmanLayout, huffman_linear, huffman_decode\n"
        "assert 'triton' not in sys.modules and not torch.cuda.is_initialized()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
