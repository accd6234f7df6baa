"""`dcomp compress`: a plain safetensors file and a tiny Hugging Face folder, the dry-run plan,
the size table, bad sources and configs; `dcomp --version`."""

import json

import pytest
import safetensors.torch
import torch
from torch import nn

import compress
import dc_kernels
from compress._version import __version__
from perf import cli
from perf.compress_sources import SourceError, module_from_state_dict

CONFIG = compress.DeepCompressionConfig(density=0.3, bits=4, skip=("embed",))


def net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Module()
    model.embed = nn.Embedding(20, 16)
    model.body = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 16, bias=False))
    model.norm = nn.LayerNorm(16)
    return model


@pytest.fixture
def plain(tmp_path):
    """(the model, its state dict file, the config file)."""
    model = net()
    safetensors.torch.save_file(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "cfg.json").write_text(CONFIG.to_json())
    return model, tmp_path / "model.safetensors", tmp_path / "cfg.json"


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dcomp (deep-compression) {__version__}"


def test_dry_run_prints_the_plan_and_writes_nothing(plain, tmp_path, capsys):
    _, source, config = plain
    assert cli.main(["compress", str(source), "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "body.0" in out and "body.2" in out and "density 0.3" in out
    assert "2 layers to compress (2,048 weights)" in out and "skip embed: in config.skip" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "model.safetensors"]


@torch.no_grad()
def test_a_safetensors_file_becomes_a_checkpoint_load_compressed_reads(plain, tmp_path, capsys):
    model, source, config = plain
    out = tmp_path / "out"
    assert cli.main(["compress", str(source), "--config", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "whole model on disk (save_compressed)" in captured.out and "weight files:" in captured.out
    assert "compress_ [" in captured.err  # the progress bar
    with torch.device("meta"):
        fresh = net()
    dc_kernels.load_compressed(fresh, out)
    expected = net()
    dc_kernels.compress_(expected, CONFIG)
    x = torch.randn(3, 16)
    assert torch.equal(fresh.body(x), expected.body(x)) and torch.equal(
        fresh.embed.weight, model.embed.weight
    )


@torch.no_grad()
def test_a_hugging_face_folder_becomes_a_compressed_folder(tmp_path, capsys):
    pytest.importorskip("transformers")
    import dc_kernels.hf
    from tests.dc_kernels.hf_models import build, inputs, outputs

    model = build("llama")
    model.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("kept")
    (tmp_path / "cfg.json").write_text(
        compress.DeepCompressionConfig(density=0.3, bits=4, skip=("lm_head",)).to_json()
    )
    argv = ["compress", str(tmp_path / "src"), "--config", str(tmp_path / "cfg.json")]
    assert cli.main([*argv, "--dry-run"]) == 0
    assert "skip lm_head: in config.skip" in capsys.readouterr().out
    assert cli.main([*argv, "--out", str(tmp_path / "dst")]) == 0
    assert (tmp_path / "dst" / "notes.txt").read_text() == "kept"
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["quantization_config"]["modules"]
    loaded = type(model).from_pretrained(tmp_path / "dst").eval()
    dc_kernels.compress_(model, compress.DeepCompressionConfig(density=0.3, bits=4, skip=("lm_head",)))
    x = inputs("llama")
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_calibration_file_drives_calibrated_compression(plain, tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.dc_kernels.hf_models import build, inputs

    build("llama").save_pretrained(tmp_path / "src")
    config = compress.DeepCompressionConfig(
        density=0.3, bits=4, pruning="obs", quantization="obs", skip=("lm_head",)
    )
    (tmp_path / "cfg.json").write_text(config.to_json())
    compress.save_calibration(tmp_path / "calib.safetensors", [inputs("llama")])
    argv = [
        "compress",
        str(tmp_path / "src"),
        "--config",
        str(tmp_path / "cfg.json"),
        "--out",
        str(tmp_path / "dst"),
    ]
    assert cli.main([*argv, "--calibration", str(tmp_path / "calib.safetensors")]) == 0
    assert "obs+obs" in capsys.readouterr().out  # the report's calibration table
    assert cli.main(argv) == 2  # obs methods without calibration inputs: refused, naming the setting
    assert "needs calibration inputs" in capsys.readouterr().err
    _, source, _ = plain
    args = [str(source), "--out", str(tmp_path / "x"), "--calibration", str(tmp_path / "calib.safetensors")]
    assert cli.main(["compress", *args]) == 2
    assert "needs a model that runs" in capsys.readouterr().err


def test_bad_sources_and_configs_are_clean_errors(plain, tmp_path, capsys):
    _, source, _ = plain
    (tmp_path / "bad.json").write_text('{"bits": 99}')
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "folder").mkdir()
    cases = [
        ([str(source), "--config", str(tmp_path / "bad.json"), "--dry-run"], "bits must be an int in 1..8"),
        ([str(tmp_path / "junk.safetensors"), "--dry-run"], "not a readable safetensors file"),
        ([str(tmp_path / "folder"), "--dry-run"], "without config.json"),
        ([str(tmp_path / "missing.safetensors"), "--dry-run"], "does not exist"),
        ([str(tmp_path / "cfg.json"), "--dry-run"], "expected a .safetensors file"),
    ]
    for argv, message in cases:
        assert cli.main(["compress", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        cli.main(["compress", str(source)])  # neither --out nor --dry-run
    assert "--out is required" in capsys.readouterr().err


def test_module_from_state_dict_rebuilds_linears_and_keeps_the_rest():
    model = net()
    rebuilt = module_from_state_dict(model.state_dict())
    assert (
        isinstance(rebuilt.body.get_submodule("0"), nn.Linear)
        and rebuilt.body.get_submodule("2").bias is None
    )
    assert isinstance(rebuilt.embed, nn.Linear)  # names carry no types: hence config.skip
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(SourceError, match="no tensor"):
        module_from_state_dict({})
