"""compress_ with calibration inputs: calibrated layers swapped in, selection, errors."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

import compress
import dc_kernels
from dc_kernels.linear import CompressedLinear


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


def batches(seed: int = 1, count: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(16, 16, generator=g)
    return [torch.randn(40, 16, generator=g) @ mixing for _ in range(count)]


OBS = compress.DeepCompressionConfig(density=0.4, bits=3, pruning="obs", quantization="obs")


def test_calibrated_layers_are_swapped_in_and_reported():
    model = mlp()
    reference = [model(b).detach() for b in batches()]
    report = dc_kernels.compress_(model, OBS, calibration=batches(), backend="reference")
    assert set(report.converted) == {"0", "2", "4"}
    assert list(report.calibration.layers) == ["0", "2", "4"]
    for name, matrix in report.calibration.layers.items():
        module = model.get_submodule(name)
        assert isinstance(module, CompressedLinear) and module.to_matrix().equals(matrix)
    assert "output error" not in str(report) and "obs+obs" in str(report)
    # Closer to the original model than the data-free one-shot compression.
    plain = mlp()
    dc_kernels.compress_(plain, compress.DeepCompressionConfig(density=0.4, bits=3), backend="reference")
    with torch.no_grad():
        calibrated = sum(float((model(b) - r).norm()) for b, r in zip(batches(), reference))
        data_free = sum(float((plain(b) - r).norm()) for b, r in zip(batches(), reference))
    assert calibrated < data_free


def test_skip_and_filter_leave_layers_dense_and_uncalibrated():
    model = mlp()
    config = compress.DeepCompressionConfig(density=0.5, bits=3, pruning="wanda", skip=("4",))
    report = dc_kernels.compress_(model, config, filter=lambda n, m: n != "0", calibration=batches())
    assert list(report.calibration.layers) == ["2"]
    assert isinstance(model[0], nn.Linear) and isinstance(model[4], nn.Linear)


def test_a_method_needing_data_without_calibration_is_refused_naming_the_layer():
    config = compress.DeepCompressionConfig(density=0.5, layers={"2": {"quantization": "weighted-kmeans"}})
    model = mlp()
    with pytest.raises(compress.ConfigError, match=r"layer '2': quantization='weighted-kmeans' needs"):
        dc_kernels.compress_(model, config)
    assert all(isinstance(m, nn.Linear) for m in model if not isinstance(m, nn.GELU))


def test_layers_calibration_never_reaches_are_compressed_without_data_and_noted():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
    g = torch.Generator().manual_seed(0)
    report = dc_kernels.compress_(model, OBS, calibration=[torch.randn(3, 5, 16, generator=g)])
    # nn.MultiheadAttention reads out_proj.weight itself: its forward (and hook) never runs.
    notes = {name: r.note for name, r in report.calibration.report.items()}
    assert "never reach" in notes["layers.0.self_attn.out_proj"]
    assert notes["layers.0.linear1"] == "" and notes["layers.0.linear2"] == ""


def test_a_module_shared_under_two_names_is_calibrated_once():
    shared = nn.Linear(16, 16)
    model = nn.Sequential(shared, nn.Tanh(), shared)
    report = dc_kernels.compress_(model, OBS, calibration=batches())
    assert list(report.calibration.layers) == ["0"] and set(report.converted) == {"0", "2"}
    assert model[0] is model[2] and report.calibration.report["0"].rows == 2 * 3 * 40


def test_progress_logs_a_line_per_calibrated_layer(caplog):
    with caplog.at_level(logging.INFO, logger="dc_kernels.model_api"):
        dc_kernels.compress_(mlp(), OBS, calibration=batches(), progress=True)
    assert caplog.text.count("compress_ calibrated") == 3 and "output error" in caplog.text


def test_calibration_from_a_file(tmp_path):
    path = tmp_path / "calibration.safetensors"
    compress.save_calibration(path, batches())
    first, again = mlp(), mlp()
    a = dc_kernels.compress_(first, OBS, calibration=compress.load_calibration(path))
    b = dc_kernels.compress_(again, OBS, calibration=batches())
    for name, matrix in a.calibration.layers.items():
        assert matrix.equals(b.calibration.layers[name])
    assert np.isfinite([r.error for r in a.calibration.report.values()]).all()
