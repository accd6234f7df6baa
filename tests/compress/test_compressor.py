import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from compress import (
    CompressedMatrix,
    ConfigError,
    DeepCompressionConfig,
    NonFiniteWeightError,
    UnsupportedModuleError,
)
from compress.compressor import Compressor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc1 = nn.Linear(4 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 5)
        self.lm_head = nn.Linear(5, 5)

    def forward(self, x):
        x = torch.relu(self.conv(x)).flatten(1)
        return self.lm_head(self.fc2(torch.relu(self.fc1(x))))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 5, (32,), generator=g)


def _train(model, compressor, steps=4, lr=0.05):
    x, y = _data()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y) + compressor.l2_penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        compressor.step()


def test_full_lifecycle():
    torch.manual_seed(0)
    model = Net()
    config = DeepCompressionConfig(
        density=0.25,
        bits=3,
        index_bits=4,
        prune_stages=2,
        l2=1e-4,
        skip=("lm_head",),
        layers={"fc2": {"bits": 2}},
    )
    compressor = Compressor(model, config)
    assert compressor.layer_names == ["conv", "fc1", "fc2"]
    compressor.prepare()
    for name, mask in compressor.masks().items():
        assert int(mask.sum()) == round(0.25**0.5 * mask.numel()), name
    _train(model, compressor)
    for name, mask in compressor.masks().items():
        assert torch.all(getattr(model, name).weight[~mask] == 0)
    assert compressor.prune() == 2
    _train(model, compressor)
    masks = {name: mask.clone() for name, mask in compressor.masks().items()}
    for name, mask in masks.items():
        assert int(mask.sum()) == round(0.25 * mask.numel())
        assert torch.all(getattr(model, name).weight[~mask] == 0)
    compressor.share()
    codebooks = {
        name: getattr(model, name).parametrizations.weight[0].codebook.detach().clone() for name in masks
    }
    _train(model, compressor, lr=0.01)
    report = compressor.report()
    assert list(report.index) == ["conv", "fc1", "fc2", "total"]
    layers = compressor.finalize()
    assert set(layers) == {"conv", "fc1", "fc2"}
    assert layers["fc2"].bits == 2 and layers["fc1"].bits == 3
    assert layers["conv"].shape == (4, 9)
    for name, matrix in layers.items():
        assert isinstance(matrix, CompressedMatrix)
        weight = getattr(model, name).weight.detach()
        np.testing.assert_array_equal(weight.reshape(weight.shape[0], -1).numpy(), matrix.to_dense())
        np.testing.assert_array_equal(matrix.mask(), masks[name].reshape(weight.shape[0], -1).numpy())
        # Fine-tuning moved the centroids.
        assert not np.array_equal(matrix.codebook, codebooks[name].numpy())
    # The model still runs, with plain parameters.
    assert model(_data()[0]).shape == (32, 5)
    assert all("parametrizations" not in n for n, _ in model.named_parameters())


def test_finalize_straight_after_pruning_and_report_while_pruning():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    compressor = Compressor(model, DeepCompressionConfig(density=0.5, bits=2, prune_stages=3)).prepare()
    report = compressor.report()
    assert isinstance(report, pd.DataFrame) and report.loc["total", "weights"] == 260
    layers = compressor.finalize()
    assert layers["0"].nnz == 100 and layers["2"].nnz == 30
    assert compressor.phase == "finalized"


def test_quality_pruning_in_stages():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(50, 40))
    std = float(model[0].weight.detach().std())
    compressor = Compressor(model, DeepCompressionConfig(quality=1.0, prune_stages=2))
    compressor.prepare()
    weight = model[0].weight
    assert int(compressor.masks()["0"].sum()) == int((weight.abs() > 0).sum())
    kept_after_first = int(compressor.masks()["0"].sum())
    compressor.prune()
    final = compressor.masks()["0"]
    assert int(final.sum()) < kept_after_first
    assert torch.all(weight.abs()[final] > std)


def test_filter_selects_modules():
    model = Net()
    compressor = Compressor(model, filter=lambda name, module: name.startswith("fc"))
    assert compressor.layer_names == ["fc1", "fc2"]
    only_conv = Compressor(model, DeepCompressionConfig(module_types=("Conv2d",)))
    assert only_conv.layer_names == ["conv"]


def test_filter_matching_unsupported_modules():
    model = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4), nn.Conv1d(2, 2, 1))
    with pytest.raises(UnsupportedModuleError, match=r"'1' of type LSTM"):
        Compressor(model, filter=lambda name, module: True)
    with pytest.raises(TypeError):  # UnsupportedModuleError is also a TypeError
        Compressor(model, filter=lambda name, module: name == "2")


def test_nothing_selected():
    with pytest.raises(ConfigError, match="no module"):
        Compressor(nn.Sequential(nn.ReLU()))
    with pytest.raises(ConfigError, match="no module"):
        Compressor(nn.Sequential(nn.Linear(2, 2)), DeepCompressionConfig(skip=("0",)))


def test_non_finite_weights_name_the_module():
    model = Net()
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightError, match="'fc2'"):
        Compressor(model).prepare()


def test_lifecycle_order_is_checked():
    model = nn.Sequential(nn.Linear(4, 4))
    compressor = Compressor(model, DeepCompressionConfig(density=0.5))
    with pytest.raises(ConfigError, match="prepare"):
        compressor.step()
    with pytest.raises(ConfigError, match="share"):
        compressor.share()
    compressor.prepare()
    with pytest.raises(ConfigError, match="pruning stages are done"):
        compressor.prune()
    with pytest.raises(ConfigError, match="prepare"):
        compressor.prepare()
    compressor.finalize()
    with pytest.raises(ConfigError, match="finalize"):
        compressor.finalize()


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"nn\.Module"):
        Compressor("model")
    with pytest.raises(TypeError, match="DeepCompressionConfig"):
        Compressor(nn.Linear(2, 2), {"density": 0.5})
