"""Model API: drop-in swaps of whole models, reports, Compressor hand-off."""

import copy
import dataclasses
import logging

import pytest
import torch
from torch import nn

import compress
import dc_kernels
from dc_kernels.linear import CompressedLinear
from tests.dc_kernels.models import CONFIG, MLP, decompressed, rel_error
from workloads import random_compressed_matrix


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
    report = dc_kernels.compress_(model, config, filter=lambda name, module: name != "body.2")
    assert set(report.converted) == {"body.0", "body.4"}
    assert report.skipped == {
        "body.2": "the filter returned False (it is called as filter(name, module))",
        "conv": "Conv2d: CompressedLinear replaces nn.Linear only",
        "lm_head": "in config.skip",
    }
    assert model["body"][4].bits == 2 and model["body"][0].bits == 4
    assert isinstance(model["lm_head"], nn.Linear) and isinstance(model["body"][2], nn.Linear)
    text = str(report)
    assert "body.0" in text and "total" in text and "skipped lm_head: in config.skip" in text
    assert report.dense_bytes / report.compressed_bytes > 1


def test_progress_bar_and_log_count_the_layers_to_compress(capsys, caplog):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8), nn.Linear(8, 8))
    config = compress.DeepCompressionConfig(density=0.5, bits=3, skip=("3",))
    with caplog.at_level(logging.DEBUG, logger="dc_kernels.model_api"):
        dc_kernels.compress_(model, config, progress=True)
    bars = [line.split("] ")[1].split() for line in capsys.readouterr().err.splitlines()]
    assert [(bar[0], bar[2]) for bar in bars] == [("1/2", "0"), ("2/2", "2")]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1:] == ["compress_ 1/2 0 (32x64)", "compress_ 2/2 2 (8x32)"]
    dc_kernels.compress_(nn.Sequential(nn.Linear(4, 4)), config)
    assert capsys.readouterr().err == ""  # quiet by default


def test_module_types_leave_excluded_layers_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    config = compress.DeepCompressionConfig(density=0.5, bits=3, module_types=("Linear",))
    report = dc_kernels.compress_(model, config)
    assert set(report.converted) == {"2"} and isinstance(model[0], nn.Conv2d)
    assert report.skipped == {"0": "config.module_types excludes Conv2d"}
    only_conv = dataclasses.replace(config, module_types=("Conv2d",))
    with pytest.warns(UserWarning, match="no layer was compressed"):
        report = dc_kernels.compress_(nn.Sequential(nn.Linear(8, 4)), only_conv)
    assert report.skipped == {"0": "config.module_types excludes Linear"} and not report.converted


def test_meta_weights_and_bare_linear_and_bad_config():
    with torch.device("meta"):
        model = MLP()
    with pytest.warns(UserWarning, match="weights on the meta device"):
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
    layer = random_compressed_matrix(64, 32, 0.1, 4)
    with pytest.raises(ValueError, match="does not have"):
        dc_kernels.swap_compressed_(MLP(), {"missing": layer})
    with pytest.raises(ValueError, match="has shape"):
        dc_kernels.swap_compressed_(MLP(), {"2": layer})
    model = nn.Sequential(nn.Conv2d(1, 64, 1))
    with pytest.warns(UserWarning, match="no layer was compressed"):
        report = dc_kernels.swap_compressed_(model, {"0": random_compressed_matrix(64, 1, 0.5, 2)})
    assert report.skipped == {"0": "Conv2d: CompressedLinear replaces nn.Linear only"}


def test_every_no_op_says_why():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 16))
    dc_kernels.compress_(model, CONFIG)
    with pytest.warns(UserWarning, match=r"no layer was compressed: already compressed"):
        report = dc_kernels.compress_(model, CONFIG)
    assert report.skipped == {"1": "already compressed (a CompressedLinear)"} and not report.converted
    assert str(report).startswith("no layer compressed")
    fresh = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 16))
    with pytest.warns(UserWarning, match="Embedding: CompressedLinear replaces nn.Linear only"):
        report = dc_kernels.compress_(fresh, CONFIG, filter=lambda name, m: isinstance(m, nn.Embedding))
    assert report.skipped["0"].startswith("selected by the filter, but Embedding")
    # The filter's arguments the wrong way round: every Linear refused, the report says how it is called.
    with pytest.warns(UserWarning, match=r"filter\(name, module\)"):
        dc_kernels.compress_(fresh, CONFIG, filter=lambda module, name: isinstance(module, nn.Linear))
    with pytest.warns(UserWarning, match="has no nn.Linear layer"):
        dc_kernels.compress_(nn.Sequential(nn.ReLU()), CONFIG)


def test_legacy_filter_fn_order_still_works_with_a_warning():
    model = MLP()
    with pytest.warns(DeprecationWarning, match=r"filter_fn\(module, name\) is deprecated"):
        report = dc_kernels.compress_(model, CONFIG, lambda module, name: name != "2")
    assert set(report.converted) == {"0", "4"}
    with pytest.raises(TypeError, match="not both"):
        dc_kernels.compress_(MLP(), CONFIG, lambda m, n: True, filter=lambda n, m: True)


def test_a_plain_dict_config_gets_a_hint():
    with pytest.raises(TypeError, match=r"DeepCompressionConfig\(\*\*settings\)"):
        dc_kernels.compress_(MLP(), {"bits": 4, "density": 0.1})


def test_report_sizes_cover_the_whole_model_in_memory_and_on_disk():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 64), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 64))
    dense = sum(p.numel() * 4 for p in model.parameters())
    report = dc_kernels.compress_(model, compress.DeepCompressionConfig(density=0.1, bits=4))
    assert report.memory_before == report.disk_before == dense
    embedding = 100 * 64 * 4
    assert report.memory_after == embedding + report.compressed_bytes
    assert report.disk_after == embedding + report.disk_bytes
    assert report.disk_bytes < report.compressed_bytes < report.dense_bytes
    text = str(report)
    assert "whole model in memory:" in text and "whole model on disk (save_compressed):" in text


def test_long_names_keep_the_columns_and_bf16_wording_is_right():
    model = nn.Sequential()
    model.add_module("a_rather_long_module_name_for_a_projection_layer", nn.Linear(64, 64).bfloat16())
    model.add_module("b", nn.Linear(64, 64).bfloat16())
    # The reference backend holds the canonical tensors (3 bytes per kept weight).
    report = dc_kernels.compress_(
        model, compress.DeepCompressionConfig(density=0.8, bits=5), backend="reference"
    )
    lines = str(report).splitlines()
    assert len({len(line) for line in lines[:3]}) == 1  # the last column ends in one place
    assert "larger than dense bfloat16" in str(model.b)  # 3 bytes per kept weight at density 0.8 > 2 bytes
    assert "(1.3x larger than dense bfloat16)" in str(model.b)


def test_plan_compression_changes_nothing_and_works_on_meta():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    plan = dc_kernels.plan_compression(model, compress.DeepCompressionConfig(skip=("2",), bits=3))
    assert [(p.name, p.shape, p.settings and p.settings.bits, p.reason) for p in plan] == [
        ("0", (16, 8), 3, None),
        ("2", (4, 16), None, "in config.skip"),
    ]
    assert isinstance(model[0], nn.Linear)
