"""Hugging Face round trips on tiny models built from configs (no download): compress on load,
save_pretrained / from_pretrained, sentence-transformers save / load, meta-built models through
load_compressed; outputs bit-identical. Skipped where transformers is not installed."""

import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

import compress  # noqa: E402
import dc_kernels  # noqa: E402
import dc_kernels.hf  # noqa: E402  (registers the quantization method)
from dc_kernels.linear import CompressedLinear  # noqa: E402
from tests.dc_kernels.hf_models import ARCHITECTURES, build, inputs, outputs, sentence_model  # noqa: E402

CONFIG = compress.DeepCompressionConfig(density=0.3, bits=4)


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def dense_folder(request, tmp_path_factory):
    """(architecture, a folder holding the dense model's save_pretrained output)."""
    folder = tmp_path_factory.mktemp(request.param)
    build(request.param).save_pretrained(folder)
    return request.param, folder


@torch.no_grad()
def test_quantization_config_compresses_on_load(dense_folder):
    kind, folder = dense_folder
    model_class = ARCHITECTURES[kind][0]
    loaded = model_class.from_pretrained(folder, quantization_config=CONFIG).eval()
    reference = model_class.from_pretrained(folder).eval()
    report = dc_kernels.compress_(reference, CONFIG)
    assert report.converted
    assert all(isinstance(reference.get_submodule(n), CompressedLinear) for n in report.converted)
    assert all(isinstance(loaded.get_submodule(n), CompressedLinear) for n in report.converted)
    x = inputs(kind)
    assert torch.equal(outputs(loaded, x), outputs(reference, x))


@torch.no_grad()
def test_save_pretrained_loads_back_compressed(dense_folder, tmp_path):
    kind, folder = dense_folder
    model_class = ARCHITECTURES[kind][0]
    model = model_class.from_pretrained(folder).eval()
    report = dc_kernels.compress_(model, CONFIG)
    model.save_pretrained(tmp_path)
    recorded = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert recorded["quant_method"] == "deep_compression" and set(recorded["modules"]) == set(
        report.converted
    )
    assert recorded["config"] == CONFIG.to_dict()
    loaded = (
        transformers.AutoModel.from_pretrained(tmp_path)
        if kind == "bert"
        else model_class.from_pretrained(tmp_path)
    )
    x = inputs(kind)
    assert torch.equal(outputs(loaded.eval(), x), outputs(model, x))
    assert all(not t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    # Saved again after loading: the same files load once more.
    loaded.save_pretrained(tmp_path / "again")
    again = model_class.from_pretrained(tmp_path / "again").eval()
    assert torch.equal(outputs(again, x), outputs(model, x))


def test_tied_output_embedding_stays_dense():
    model = build("opt")
    report = dc_kernels.compress_(model, CONFIG)
    assert report.skipped["lm_head"].startswith("its weight is tied to model.decoder.embed_tokens.weight")
    assert model.lm_head.weight is model.model.decoder.embed_tokens.weight


@torch.no_grad()
@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_meta_built_models_load_their_non_persistent_buffers(kind, tmp_path):
    model = build(kind)
    dc_kernels.compress_(model, CONFIG)
    dc_kernels.save_compressed(model, tmp_path)
    with torch.device("meta"):
        fresh = ARCHITECTURES[kind][0](model.config)
    dc_kernels.load_compressed(fresh, tmp_path)
    names = {"bert": ["embeddings.position_ids", "embeddings.token_type_ids"],
             "llama": ["model.rotary_emb.inv_freq"]}[kind]  # fmt: skip
    for name in names:
        assert torch.equal(fresh.get_buffer(name), model.get_buffer(name)), name
    x = inputs(kind)
    assert torch.equal(outputs(fresh.eval(), x), outputs(model, x))


@torch.no_grad()
def test_sentence_transformers_save_and_load(tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    model = sentence_model(tmp_path / "base")
    report = dc_kernels.compress_(model, CONFIG)
    assert len(report.converted) == 13  # 2 layers x 6 Linears + the pooler
    sentences = ["the cat sat on the mat", "compressed models are small"]
    expected = model.encode(sentences, convert_to_tensor=True)
    model.save(str(tmp_path / "saved"))
    loaded = sentence_transformers.SentenceTransformer(str(tmp_path / "saved"), device="cpu")
    assert torch.equal(loaded.encode(sentences, convert_to_tensor=True), expected)


def test_config_forms_and_bad_records():
    wrapped = dc_kernels.hf.DeepCompressionQuantizationConfig.wrap(CONFIG)
    assert wrapped.config == CONFIG and wrapped.quant_method == "deep_compression"
    again = dc_kernels.hf.DeepCompressionQuantizationConfig.from_dict(wrapped.to_dict())
    assert again.to_dict() == wrapped.to_dict()
    with pytest.raises(TypeError, match="DeepCompressionConfig"):
        dc_kernels.hf.DeepCompressionQuantizationConfig.wrap(3)
    with pytest.raises(compress.ConfigError, match=r"modules\['fc'\]"):
        dc_kernels.hf.DeepCompressionQuantizationConfig(CONFIG, {"fc": {"gpu_form": "nope", "bias": True}})


def test_a_checkpoint_naming_a_missing_module_is_refused(tmp_path):
    model = build("bert")
    dc_kernels.compress_(model, CONFIG)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"]["modules"]["encoder.layer.9.output.dense"] = {
        "gpu_form": "fixed",
        "bias": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"encoder\.layer\.9\.output\.dense"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.BertModel.from_pretrained(tmp_path)


@torch.no_grad()
def test_bfloat16_model_round_trips_with_a_float32_codebook(tmp_path):
    build("bert").save_pretrained(tmp_path / "dense")
    model = transformers.BertModel.from_pretrained(
        tmp_path / "dense", quantization_config=CONFIG, dtype=torch.bfloat16
    )
    layer = model.encoder.layer[0].attention.self.query
    assert layer.codebook.dtype == torch.float32 and layer.bias.dtype == torch.bfloat16
    model.save_pretrained(tmp_path / "dc")
    loaded = transformers.BertModel.from_pretrained(tmp_path / "dc")
    assert loaded.dtype == torch.bfloat16
    x = inputs("bert")
    assert torch.equal(outputs(loaded, x), outputs(model, x))


def test_an_older_transformers_is_refused_and_compression_still_works(monkeypatch):
    monkeypatch.setattr(transformers, "__version__", "4.46.1")
    with pytest.raises(ImportError, match=r"needs transformers >= 5\.0 .* found 4\.46\.1"):
        dc_kernels.hf._register()
    from dc_kernels import model_api

    monkeypatch.setitem(model_api.INTEGRATIONS, "transformers", "dc_kernels.no_such_integration")
    monkeypatch.setattr(model_api, "_UNAVAILABLE", set())
    with pytest.warns(UserWarning, match="no_such_integration is not available"):
        report = dc_kernels.compress_(torch.nn.Sequential(torch.nn.Linear(8, 8)), CONFIG)
    assert report.converted


def test_a_config_claiming_compression_over_dense_weights_is_refused(tmp_path):
    model = build("bert")
    model.save_pretrained(tmp_path)
    compressed = build("bert")
    dc_kernels.compress_(compressed, CONFIG)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = compressed.config.quantization_config.to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"records 'encoder\.layer\.0\.attention\.self\.query'"):
        transformers.BertModel.from_pretrained(tmp_path)


@torch.no_grad()
@pytest.mark.parametrize("form", ["sparse", "dense_codes", "auto"])
def test_the_form_round_trips(form, tmp_path):
    """A model compressed in a form loads back in it (the form each layer would pick by itself
    differs: dense codes at density 0.8, the sparse form at 0.1)."""
    model = build("bert")
    config = compress.DeepCompressionConfig(density=0.8 if form == "sparse" else 0.1, bits=4, form=form)
    dc_kernels.compress_(model, config)
    expected = {
        n: (m.form, m.effective_form) for n, m in model.named_modules() if isinstance(m, CompressedLinear)
    }
    assert {setting for setting, _ in expected.values()} == {form}
    model.save_pretrained(tmp_path)
    modules = json.loads((tmp_path / "config.json").read_text())["quantization_config"]["modules"]
    assert {record["form"] for record in modules.values()} == {form}
    loaded = transformers.BertModel.from_pretrained(tmp_path).eval()
    found = {
        n: (m.form, m.effective_form) for n, m in loaded.named_modules() if isinstance(m, CompressedLinear)
    }
    assert found == expected
    x = inputs("bert")
    assert torch.equal(outputs(loaded, x), outputs(model.eval(), x))


def test_a_record_without_a_form_loads_as_auto(tmp_path):
    model = build("bert")
    dc_kernels.compress_(model, compress.DeepCompressionConfig(density=0.8, bits=4, form="sparse"))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for record in config["quantization_config"]["modules"].values():
        del record["form"]  # as written before the form was recorded
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = transformers.BertModel.from_pretrained(tmp_path)
    assert {m.form for m in loaded.modules() if isinstance(m, CompressedLinear)} == {"auto"}
    with pytest.raises(compress.ConfigError, match="form"):
        dc_kernels.hf.DeepCompressionQuantizationConfig(
            CONFIG, {"fc": {"gpu_form": "fixed", "bias": True, "form": "dense"}}
        )
