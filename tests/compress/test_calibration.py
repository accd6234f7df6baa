import gc
import logging
import weakref

import numpy as np
import pytest
import torch
from torch import nn

import compress
from compress import (
    CalibrationError,
    ConfigError,
    DeepCompressionConfig,
    UnsupportedModuleError,
    calibrated_compress,
    compress_matrix,
)
from compress import calibration as calibration_module


class Block(nn.Module):
    """Attention-like projections sharing one input, then a two-layer MLP and a conv stem."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.proj = nn.Linear(4 * 4 * 4, width)
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.unused = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(torch.relu(self.conv(x)).flatten(1))
        h = h + torch.tanh(self.q(h) * self.k(h)) + self.v(h)
        return h + self.down(torch.relu(self.up(h)))


def model_and_batches(seed: int = 0, batches: int = 3):
    torch.manual_seed(seed)
    model = Block()
    g = torch.Generator().manual_seed(seed + 1)
    data = [torch.randn(24, 2, 4, 4, generator=g) for _ in range(batches)]
    return model, data


def outputs(model, batches):
    with torch.no_grad():
        return torch.cat([model(b) for b in batches])


def test_layers_in_forward_order_with_their_report_and_weights_written_back():
    model, batches = model_and_batches()
    config = DeepCompressionConfig(density=0.5, bits=4, pruning="obs", quantization="obs", skip=("unused",))
    seen = []
    result = calibrated_compress(model, batches, config, on_layer=seen.append)
    assert list(result.layers) == ["conv", "proj", "q", "k", "v", "up", "down"]
    assert [r.name for r in seen] == list(result.layers)
    for name, matrix in result.layers.items():
        module = model.get_submodule(name)
        assert np.array_equal(module.weight.detach().reshape(matrix.shape).numpy(), matrix.to_dense())
        report = result.report[name]
        assert report.rows > 0 and 0 < report.error < 1 and report.density == pytest.approx(0.5, abs=0.02)
        assert (report.pruning, report.quantization, report.note) == ("obs", "obs", "")
    assert result.report["conv"].rows == 3 * 24 * 16  # one row per output position
    assert result.report["q"].rows == result.report["k"].rows == 3 * 24
    assert "q" in str(result) and result.table().loc["down", "bits"] == 4


def test_calibrated_methods_keep_the_model_closer_than_magnitude_and_kmeans():
    base, batches = model_and_batches(seed=3, batches=4)
    reference = outputs(base, batches)
    errors = {}
    for method in ("magnitude+kmeans", "obs+obs"):
        pruning, quantization = method.split("+")
        model, _ = model_and_batches(seed=3)
        config = DeepCompressionConfig(density=0.4, bits=3, pruning=pruning, quantization=quantization)
        calibrated_compress(model, batches, config)
        errors[method] = float((outputs(model, batches) - reference).norm() / reference.norm())
    assert errors["obs+obs"] < 0.9 * errors["magnitude+kmeans"], errors


def test_magnitude_and_kmeans_with_calibration_give_the_data_free_layers():
    model, batches = model_and_batches()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if hasattr(m, "weight")}
    result = calibrated_compress(model, batches, DeepCompressionConfig(density=0.3, bits=3))
    for name, matrix in result.layers.items():
        assert matrix.equals(compress_matrix(weights[name], density=0.3, bits=3, form="auto"))


def test_deterministic_for_a_seed():
    results = []
    for _ in range(2):
        model, batches = model_and_batches()
        config = DeepCompressionConfig(
            density=0.5, bits=3, pruning="obs", quantization="obs", init="random", seed=4
        )
        results.append(calibrated_compress(model, batches, config))
    for name, matrix in results[0].layers.items():
        assert matrix.equals(results[1].layers[name])


def test_a_callable_and_keyword_batches_calibrate_like_tensor_batches():
    model, batches = model_and_batches()
    config = DeepCompressionConfig(density=0.5, bits=3, pruning="wanda", quantization="weighted-kmeans")
    expected = calibrated_compress(model, batches, config)

    class Keyword(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *, x):
            return self.inner(x)

    for calibration, wrap in (
        (lambda m: [m(b) for b in batches], lambda m: m),
        ([{"x": b} for b in batches], Keyword),
        ([(b,) for b in batches], lambda m: m),
    ):
        model, _ = model_and_batches()
        got = calibrated_compress(wrap(model), calibration, config)
        for name, matrix in expected.layers.items():
            other = got.layers[name if name in got.layers else f"inner.{name}"]
            assert matrix.equals(other), name


def test_a_layer_never_reached_is_compressed_without_data_and_noted(caplog):
    model, batches = model_and_batches()
    config = DeepCompressionConfig(density=0.5, bits=3, pruning="obs")
    with caplog.at_level(logging.WARNING, logger="compress.calibration"):
        result = calibrated_compress(model, batches, config)
    report = result.report["unused"]
    assert "never reach" in report.note and "pruning='obs'" in report.note
    assert report.rows == 0 and np.isnan(report.error)
    assert result.layers["unused"].nnz == round(0.5 * 16 * 16)
    assert "unused" in caplog.text


def test_hooks_are_removed_and_at_most_one_hessian_is_alive(monkeypatch):
    model, batches = model_and_batches()
    alive: list[weakref.ref] = []
    original = calibration_module.HessianStats.__init__

    def tracking(self, members):
        original(self, members)
        alive.append(weakref.ref(self.hessian))

    monkeypatch.setattr(calibration_module.HessianStats, "__init__", tracking)
    most = []

    def count(report):
        gc.collect()
        most.append(sum(ref() is not None for ref in alive))

    calibrated_compress(
        model, batches, DeepCompressionConfig(density=0.5, bits=3, pruning="obs"), on_layer=count
    )
    gc.collect()
    assert max(most) == 1 and sum(ref() is not None for ref in alive) == 0
    # q, k and v share their input: one Hessian for the three; one per other calibrated layer.
    assert len(alive) == 5
    for module in model.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks


def test_training_flags_are_restored():
    model, batches = model_and_batches()
    model.train()
    model.q.eval()
    calibrated_compress(model, batches, DeepCompressionConfig(density=0.5, bits=3))
    assert model.training and model.proj.training and not model.q.training


def test_bad_calibration_inputs_are_refused_with_a_clear_error():
    model, batches = model_and_batches()
    config = DeepCompressionConfig(density=0.5, bits=3, pruning="obs")
    with pytest.raises(CalibrationError, match="empty"):
        calibrated_compress(model, [], config)
    bad = batches[1].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(CalibrationError, match=r"batch 1: 1 of 768 values are NaN or inf"):
        calibrated_compress(model, [batches[0], bad], config)
    with pytest.raises(CalibrationError, match=r"batch 0 is empty"):
        calibrated_compress(model, [batches[0][:0]], config)
    with pytest.raises(CalibrationError, match=r"model raised on calibration batch 0.*"):
        calibrated_compress(model, [torch.randn(3, 5)], config)
    with pytest.raises(CalibrationError, match="must be a tensor"):
        calibrated_compress(model, [3.0], config)
    with pytest.raises(TypeError, match="iterable of batches"):
        calibrated_compress(model, torch.randn(3, 2, 4, 4), config)
    with pytest.raises(TypeError, match="load_calibration"):
        calibrated_compress(model, "calibration.safetensors", config)


def test_inputs_the_model_turns_into_nan_name_the_layer():
    model, batches = model_and_batches()
    with torch.no_grad():
        model.proj.bias[0] = float("inf")
    with pytest.raises(CalibrationError, match=r"layer 'q'.*NaN or inf"):
        calibrated_compress(model, batches, DeepCompressionConfig(density=0.5, bits=3, pruning="obs"))


def test_all_zero_inputs_name_the_layer():
    model, _ = model_and_batches()
    with torch.no_grad():
        model.proj.weight.zero_()
        model.proj.bias.zero_()
    config = DeepCompressionConfig(density=0.5, bits=3, pruning="obs", skip=("conv", "proj"))
    with pytest.raises(compress.SingularHessianError, match=r"'q'.*zero"):
        calibrated_compress(model, [torch.randn(4, 2, 4, 4)], config)


def test_selection_errors():
    model, batches = model_and_batches()
    with pytest.raises(ConfigError, match="no layer"):
        calibrated_compress(model, batches, DeepCompressionConfig(skip=(".*",)))
    with pytest.raises(ValueError, match="does not have"):
        calibrated_compress(model, batches, names=["nope"])
    with pytest.raises(UnsupportedModuleError, match="ReLU"):
        calibrated_compress(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), [torch.randn(2, 4)], names=["1"])
    with pytest.raises(TypeError, match=r"nn.Module"):
        calibrated_compress("model", batches)


def test_grouped_conv_is_compressed_without_data():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 3))
    result = calibrated_compress(model, [torch.randn(5, 4, 4, 4)], DeepCompressionConfig(density=0.5, bits=2))
    assert "grouped" in result.report["0"].note and result.report["2"].note == ""


def test_a_shared_module_called_twice_accumulates_both_calls():
    layer = nn.Linear(6, 6)
    model = nn.Sequential(layer, nn.Tanh(), layer)
    result = calibrated_compress(model, [torch.randn(7, 6)], DeepCompressionConfig(density=0.5, bits=2))
    assert list(result.layers) == ["0"] and result.report["0"].rows == 14


def test_the_retraining_pipeline_starts_from_the_calibrated_result():
    model, batches = model_and_batches()
    config = DeepCompressionConfig(density=0.4, bits=3, pruning="obs", quantization="obs", skip=("unused",))
    result = calibrated_compress(model, batches, config)
    compressor = compress.Compressor(model, config).prepare()
    compressor.share()
    for name, matrix in compressor.finalize().items():
        calibrated = result.layers[name]
        assert np.array_equal(matrix.mask(), calibrated.mask())
        assert np.array_equal(matrix.to_dense(), calibrated.to_dense())
