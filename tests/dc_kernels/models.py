"""Small models the module-API tests swap layers in: an MLP, a Transformer encoder and an LSTM
tagger, with the helpers that compare a compressed model with its decoded dense twin."""

import copy

import torch
from torch import nn

import compress
from dc_kernels.linear import CompressedLinear


class MLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class Tagger(nn.Module):
    """An LSTM with a projection in front and two Linear heads."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 24)
        self.lstm = nn.LSTM(24, 32, batch_first=True)
        self.tags = nn.Linear(32, 8)
        self.score = nn.Linear(32, 1)

    def forward(self, x):
        hidden, _ = self.lstm(torch.tanh(self.embed(x)))
        return torch.cat([self.tags(hidden), self.score(hidden)], dim=-1)


MODELS = {  # model class, input shape, names of its nn.Linear modules
    "mlp": (MLP, (5, 32), {"0", "2", "4"}),
    "transformer": (
        Encoder,
        (2, 7, 32),
        {f"encoder.layers.{i}.{n}" for i in (0, 1) for n in ("linear1", "linear2", "self_attn.out_proj")},
    ),
    "lstm": (Tagger, (3, 6, 16), {"embed", "tags", "score"}),
}
CONFIG = compress.DeepCompressionConfig(density=0.3, bits=5)


def decompressed(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every CompressedLinear replaced by nn.Linear holding the decoded
    weights: the dense model the compressed one must match."""
    dense = copy.deepcopy(model)
    for name, module in list(dense.named_modules()):
        if isinstance(module, CompressedLinear):
            parent, _, child = name.rpartition(".")
            setattr(dense.get_submodule(parent), child, module.to_linear())
    return dense


def rel_error(y, ref) -> float:
    return float((y.double() - ref.double()).norm() / ref.double().norm())


def build(kind: str, seed: int = 0):
    cls, shape, names = MODELS[kind]
    torch.manual_seed(seed)
    model = cls().eval()
    return model, torch.randn(shape), names
