import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress import ConfigError, DeepCompressionConfig, LayerConfig


def test_defaults_apply_to_every_layer():
    config = DeepCompressionConfig(density=0.2, bits=4, index_bits=3)
    assert config.for_layer("anything") == LayerConfig(density=0.2, bits=4, index_bits=3)


def test_overrides_by_name_and_regex():
    config = DeepCompressionConfig(
        density=0.1,
        quality=1.5,
        layers={r"fc\d": {"bits": 4}, "fc3": {"density": 0.3}, r"blocks\.\d+\.mlp": {"index_bits": 4}},
    )
    assert config.for_layer("fc3") == LayerConfig(density=0.3, quality=None, bits=4)
    assert config.for_layer("fc1") == LayerConfig(density=0.1, quality=1.5, bits=4)
    assert config.for_layer("blocks.12.mlp").index_bits == 4
    # fullmatch: a prefix is not a match.
    assert config.for_layer("fc12").bits == 5


def test_exact_name_wins_over_a_later_regex():
    config = DeepCompressionConfig(layers={"fc1": {"bits": 2}, "fc.*": {"bits": 6}})
    assert config.for_layer("fc1").bits == 2
    assert config.for_layer("fc2").bits == 6


def test_skip_list():
    config = DeepCompressionConfig(skip=("lm_head", r"encoder\..*\.emb"))
    assert config.is_skipped("lm_head") and config.is_skipped("encoder.0.emb")
    assert not config.is_skipped("lm_head2")


def test_json_round_trip():
    config = DeepCompressionConfig(
        density=0.05,
        bits=6,
        index_bits=4,
        init="density",
        layers={"a.*": {"quality": 0.7}},
        skip=("lm_head",),
        prune_stages=3,
        l2=1e-4,
        seed=9,
    )
    text = config.to_json()
    assert '"version": 1' in text
    assert DeepCompressionConfig.from_json(text) == config


@settings(max_examples=50, deadline=None)
@given(
    density=st.floats(1e-6, 1.0),
    bits=st.integers(1, 8),
    index_bits=st.integers(1, 8),
    init=st.sampled_from(["linear", "density", "random"]),
    quality=st.none() | st.floats(0, 10),
    overrides=st.dictionaries(
        st.sampled_from(["fc1", "fc2", r"conv\d+"]),
        st.fixed_dictionaries({}, optional={"bits": st.integers(1, 8), "density": st.floats(0.01, 1.0)}),
        max_size=3,
    ),
)
def test_json_round_trip_property(density, bits, index_bits, init, quality, overrides):
    config = DeepCompressionConfig(
        density=density, bits=bits, index_bits=index_bits, init=init, quality=quality, layers=overrides
    )
    back = DeepCompressionConfig.from_json(config.to_json())
    assert back == config
    assert back.for_layer("fc1") == config.for_layer("fc1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 0}, "bits must be an int in 1..8, got 0"),
        ({"bits": 9}, "bits"),
        ({"bits": 4.0}, "bits"),
        ({"density": 0.0}, r"density must be in \(0, 1\], got 0.0"),
        ({"density": 1.01}, "density"),
        ({"index_bits": 0}, "index_bits"),
        ({"index_bits": 9}, "index_bits"),
        ({"init": "kmeans++"}, "init"),
        ({"quality": -1.0}, "quality"),
        ({"layers": {"fc1": {"bits": 12}}}, r"layers\['fc1'\]: bits"),
        ({"layers": {"fc1": {"colour": 1}}}, "unknown settings"),
        ({"layers": {"fc(": {"bits": 2}}}, "regular expression"),
        ({"skip": ("[",)}, "regular expression"),
        ({"module_types": ("LSTM",)}, "not supported"),
        ({"prune_stages": 0}, "prune_stages"),
        ({"l2": -1.0}, "l2"),
        ({"version": 2}, "version"),
    ],
)
def test_invalid_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DeepCompressionConfig(**kwargs)


def test_invalid_json():
    with pytest.raises(ConfigError, match="JSON"):
        DeepCompressionConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="unknown config keys"):
        DeepCompressionConfig.from_json('{"densty": 0.1}')


def test_one_shot_method_settings_round_trip_and_resolve_per_layer():
    config = DeepCompressionConfig(
        density=0.5,
        pruning="obs",
        quantization="obs",
        damping=0.05,
        block_size=64,
        layers={r"fc\d": dict(pruning="wanda", quantization="weighted-kmeans", damping=0.2, block_size=32)},
    )
    again = DeepCompressionConfig.from_json(config.to_json())
    assert again == config
    assert again.for_layer("fc1") == LayerConfig(
        density=0.5, pruning="wanda", quantization="weighted-kmeans", damping=0.2, block_size=32
    )
    assert again.for_layer("head") == LayerConfig(
        density=0.5, pruning="obs", quantization="obs", damping=0.05, block_size=64
    )


def test_one_shot_method_defaults_are_the_data_free_ones_and_old_files_still_load():
    layer = DeepCompressionConfig().for_layer("x")
    assert (layer.pruning, layer.quantization) == ("magnitude", "kmeans")
    old = DeepCompressionConfig().to_dict()
    for key in ("pruning", "quantization", "damping", "block_size"):
        del old[key]
    assert DeepCompressionConfig.from_dict(old) == DeepCompressionConfig()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pruning": "sparsegpt"}, "pruning must be one of .*'obs'.*got 'sparsegpt'"),
        ({"quantization": "gptq"}, "quantization must be one of .*got 'gptq'"),
        ({"damping": -0.1}, r"damping must be a finite float >= 0, got -0.1"),
        ({"damping": float("inf")}, "damping must be a finite float >= 0, got inf"),
        ({"damping": True}, "damping must be a finite float >= 0, got True"),
        ({"block_size": 0}, "block_size must be an int >= 1, got 0"),
        ({"block_size": 2.0}, r"block_size must be an int >= 1, got 2.0"),
    ],
)
def test_one_shot_method_settings_are_validated_naming_setting_and_value(settings, message):
    with pytest.raises(ConfigError, match=message):
        DeepCompressionConfig(**settings)
    with pytest.raises(ConfigError, match=r"layers\['fc'\]: " + message):
        DeepCompressionConfig(layers={"fc": settings})
    with pytest.raises(ConfigError, match=message):
        LayerConfig(**settings)
