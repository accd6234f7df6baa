"""Model API: drop-in swaps of whole models, reports, Compressor hand-off, save/load."""

import copy
import dataclasses
import json

import pytest
import safetensors.numpy
import torch
from torch import nn

import compress
import dc_kernels
from compress.file_errors import CompressedFileError, CorruptStreamError
from dc_kernels.linear import CompressedLinear
from dc_kernels.model_api import COMPRESSED_FILE, DENSE_FILE


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


@pytest.fixture(scope="module", params=list(MODELS))
def compressed(request):
    model, x, names = build(request.param)
    report = dc_kernels.compress_(model, CONFIG)
    assert set(report.converted) == names and not report.skipped
    # Only the attention output projections are read through .weight (decoded per call): noted.
    assert set(report.notes) == {n for n in names if n.endswith("self_attn.out_proj")}
    assert all(f"note {n}: nn.MultiheadAttention reads" in str(report) for n in report.notes)
    return request.param, model, x


@torch.no_grad()
def test_forward_matches_decoded_dense_model(compressed):
    _, model, x = compressed
    y = model(x)
    assert rel_error(y, decompressed(model)(x)) <= 1e-5
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


@torch.no_grad()
def test_compile_fullgraph(compressed):
    kind, model, x = compressed
    # Dynamo traces nn.LSTM only on request (a PyTorch limit, not one of CompressedLinear).
    with torch._dynamo.config.patch(allow_rnn=kind == "lstm"):
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        assert rel_error(compiled(x), decompressed(model)(x)) <= 1e-5


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


@torch.no_grad()
def test_device_moves_and_copies(compressed):
    _, model, x = compressed
    y = model(x)
    state = copy.deepcopy(model.state_dict())
    moved = copy.deepcopy(model).to("meta")
    out = moved(x.to("meta"))
    assert out.is_meta and out.shape == y.shape
    moved.to_empty(device="cpu").load_state_dict(state)
    assert torch.equal(moved(x), y)
    assert torch.equal(copy.deepcopy(model).cpu()(x), y)


def test_report_skips_by_name_filter_and_type():
    model = nn.ModuleDict(
        {
            "body": MLP(),
            "conv": nn.Conv2d(3, 4, 3),
            "lm_head": nn.Linear(10, 50),
        }
    )
    config = compress.DeepCompressionConfig(
        density=0.5, bits=4, skip=("lm_head",), layers={"body.4": {"bits": 2}}
    )
    report = dc_kernels.compress_(model, config, filter_fn=lambda module, name: name != "body.2")
    assert set(report.converted) == {"body.0", "body.4"}
    assert report.skipped == {
        "body.2": "filter_fn returned False",
        "conv": "nn.Conv2d: CompressedLinear replaces nn.Linear only",
        "lm_head": "in config.skip",
    }
    assert model["body"][4].bits == 2 and model["body"][0].bits == 4
    assert isinstance(model["lm_head"], nn.Linear) and isinstance(model["body"][2], nn.Linear)
    text = str(report)
    assert "body.0" in text and "total" in text and "skipped lm_head: in config.skip" in text
    assert report.dense_bytes / report.compressed_bytes > 1


def test_progress_lines_count_the_layers_to_compress(capsys):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 8))
    config = compress.DeepCompressionConfig(density=0.5, bits=3, skip=("3",))
    dc_kernels.compress_(model, config, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("] ")[1] for line in lines] == ["compress_ 1/2 0 (32x64)", "compress_ 2/2 2 (8x32)"]
    dc_kernels.compress_(nn.Sequential(nn.Linear(4, 4)), config)
    assert capsys.readouterr().err == ""  # quiet by default


def test_module_types_leave_excluded_layers_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    config = compress.DeepCompressionConfig(density=0.5, bits=3, module_types=("Linear",))
    report = dc_kernels.compress_(model, config)
    assert set(report.converted) == {"2"} and isinstance(model[0], nn.Conv2d)
    assert report.skipped == {"0": "config.module_types excludes Conv2d"}
    only_conv = dataclasses.replace(config, module_types=("Conv2d",))
    report = dc_kernels.compress_(nn.Sequential(nn.Linear(8, 4)), only_conv)
    assert report.skipped == {"0": "config.module_types excludes Linear"} and not report.converted


def test_meta_weights_and_bare_linear_and_bad_config():
    with torch.device("meta"):
        model = MLP()
    report = dc_kernels.compress_(model, CONFIG)
    assert not report.converted and report.skipped["0"].startswith("weights on the meta device")
    with pytest.raises(ValueError, match=r"bare nn\.Linear"):
        dc_kernels.compress_(nn.Linear(3, 4), CONFIG)
    with pytest.raises(TypeError, match="DeepCompressionConfig"):
        dc_kernels.compress_(MLP(), {"density": 0.1}.items())


def test_shared_module_is_swapped_everywhere():
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    report = dc_kernels.compress_(model, CONFIG)
    assert set(report.converted) == {"0", "2"}
    assert isinstance(model[0], CompressedLinear) and model[0] is model[2]


@torch.no_grad()
def test_compressor_result_swaps_in():
    torch.manual_seed(1)
    model = MLP()
    compressor = compress.Compressor(model, compress.DeepCompressionConfig(density=0.25, bits=4))
    compressor.prepare()
    layers = compressor.finalize()
    x = torch.randn(4, 32)
    expected = model(x)  # after finalize() the model holds the decoded weights
    report = dc_kernels.compress_(model, layers)
    assert set(report.converted) == set(layers)
    assert rel_error(model(x), expected) <= 1e-5
    assert all(model[int(n)].to_matrix().equals(m) for n, m in layers.items())


def test_swap_errors():
    layer = compress.random_compressed_matrix(64, 32, 0.1, 4)
    with pytest.raises(ValueError, match="does not have"):
        dc_kernels.swap_compressed_(MLP(), {"missing": layer})
    with pytest.raises(ValueError, match="has shape"):
        dc_kernels.swap_compressed_(MLP(), {"2": layer})
    model = nn.Sequential(nn.Conv2d(1, 64, 1))
    report = dc_kernels.swap_compressed_(model, {"0": compress.random_compressed_matrix(64, 1, 0.5, 2)})
    assert report.skipped == {"0": "Conv2d: CompressedLinear replaces nn.Linear only"}


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
    layers = {"0": compress.random_compressed_matrix(64, 32, 0.1, 4)}
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
