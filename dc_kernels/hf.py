"""Hugging Face transformers integration: compress on load, ``save_pretrained`` / ``from_pretrained``.

Importing this module (it needs the ``hf`` extra: ``pip install "deep-compression[hf]"``,
transformers >= 5.0) registers the quantization method ``"deep_compression"`` with transformers'
quantizer plugin hooks (``register_quantization_config`` / ``register_quantizer``):

* ``AutoModel*.from_pretrained(path, quantization_config=compress.DeepCompressionConfig(...))``
  loads the dense checkpoint and compresses its Linear layers one-shot (`dc_kernels.compress_`,
  with a progress bar on stderr);
* a compressed model's ``save_pretrained(path)`` writes ``model.safetensors`` holding each
  compressed layer's canonical buffers (codebook, row pointers, int16/int32 columns, uint8
  codes, code width) and ``config.json`` holding the ``quantization_config``, which records the
  settings and the compressed modules (each one's GPU form, bias and form setting, so that it
  loads back in the same form); ``from_pretrained(path)`` builds those modules as
  `CompressedLinear` on the meta device and loads the buffers into them, so no dense weight is
  ever allocated. sentence-transformers' ``save()`` and ``SentenceTransformer(path)`` go through
  the same two calls.

A model compressed by `dc_kernels.compress_`, `swap_compressed_` or `load_compressed` records its
compression itself (`record_compression`), so ``save_pretrained`` works after any of them.
Loading a saved compressed model needs this module imported first (``import dc_kernels.hf``):
without it, transformers does not know the method, warns and initialises those Linears randomly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import safetensors
import transformers
from torch import nn
from transformers import PreTrainedModel
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

from compress.config import FORMS, DeepCompressionConfig
from compress.errors import ConfigError
from dc_kernels.backends import GPU_FORMS
from dc_kernels.checkpoint import check_not_meta
from dc_kernels.linear import CompressedLinear
from dc_kernels.model_api import compress_, register_conversion_hook

#: The oldest transformers whose quantizer hooks this module is written against.
MIN_TRANSFORMERS = (5, 0)

QUANT_METHOD = DeepCompressionConfig.quant_method
# What config.json records per compressed module: its GPU form, whether it has a bias, and its
# form setting (FORM_KEY; optional: records written before it existed load as "auto", as they ran).
MODULE_RECORD = ("gpu_form", "bias")
FORM_KEY = "form"


class DeepCompressionQuantizationConfig(QuantizationConfigMixin):
    """The ``quantization_config`` of a Deep Compression model: the `compress.DeepCompressionConfig`
    it was compressed with (None when it was loaded from elsewhere) and ``modules``, each
    compressed module's name -> ``{"gpu_form": ..., "bias": ..., "form": ...}`` (``form``, the
    module's `CompressedLinear.form`, may be missing: ``"auto"``). A plain
    `compress.DeepCompressionConfig` is accepted wherever this is (``from_pretrained`` wraps it)."""

    def __init__(
        self,
        config: DeepCompressionConfig | Mapping[str, Any] | None = None,
        modules: Mapping[str, Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        self.quant_method = QUANT_METHOD
        settings.pop("quant_method", None)
        if isinstance(config, Mapping):
            config = DeepCompressionConfig.from_dict(config)
        if config is not None and not isinstance(config, DeepCompressionConfig):
            raise TypeError(f"config must be a compress.DeepCompressionConfig, got {type(config).__name__}")
        if settings:
            if config is not None:
                raise ConfigError(f"give a config or its settings {sorted(settings)}, not both")
            config = DeepCompressionConfig.from_dict(settings)
        self.config = config
        self.modules = _check_modules(modules or {})

    @classmethod
    def wrap(cls, config: Any) -> DeepCompressionQuantizationConfig:
        """``config`` as this class (a `compress.DeepCompressionConfig`, a dict or this class)."""
        if isinstance(config, cls):
            return config
        if isinstance(config, DeepCompressionConfig):
            return cls(config)
        if isinstance(config, Mapping):
            return cls.from_dict(dict(config))
        raise TypeError(
            f"quantization_config must be a compress.DeepCompressionConfig, got {type(config).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "quant_method": QUANT_METHOD,
            "config": None if self.config is None else self.config.to_dict(),
            "modules": {name: dict(record) for name, record in self.modules.items()},
        }

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()


def _check_modules(modules: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    checked = {}
    for name, record in modules.items():
        if (
            not isinstance(name, str)
            or not isinstance(record, Mapping)
            or set(record) - {FORM_KEY} != set(MODULE_RECORD)
            or record["gpu_form"] not in GPU_FORMS
            or not isinstance(record["bias"], bool)
            or record.get(FORM_KEY, "auto") not in FORMS
        ):
            raise ConfigError(
                f"quantization_config modules[{name!r}] must be {{'gpu_form': one of {GPU_FORMS}, "
                f"'bias': bool, 'form' (optional): one of {FORMS}}}, got {record!r}"
            )
        checked[name] = dict(record)
    return checked


class DeepCompressionHfQuantizer(HfQuantizer):
    """transformers' side of the method (see the module docstring): compresses a dense
    checkpoint after loading it, or builds the recorded modules as `CompressedLinear` before
    loading a compressed one."""

    requires_calibration = False

    def __init__(self, quantization_config: Any, **kwargs: Any) -> None:
        super().__init__(DeepCompressionQuantizationConfig.wrap(quantization_config), **kwargs)
        if not self.pre_quantized and self.quantization_config.config is None:
            self.quantization_config.config = DeepCompressionConfig()

    def validate_environment(self, *args: Any, **kwargs: Any) -> None:
        device_map = kwargs.get("device_map")
        if isinstance(device_map, Mapping) and "disk" in set(device_map.values()):
            raise ValueError("deep_compression cannot offload layers to disk (device_map names 'disk')")

    def param_needs_quantization(self, model: PreTrainedModel, param_name: str, **kwargs: Any) -> bool:
        # The buffers of a compressed layer take the checkpoint's shapes (their lengths are the
        # numbers of kept weights), which transformers accepts only for quantized parameters.
        owner, _, _ = param_name.rpartition(".")
        return self.pre_quantized and owner in self.quantization_config.modules

    def _process_model_before_weight_loading(self, model: PreTrainedModel, **kwargs: Any) -> PreTrainedModel:
        if not self.pre_quantized:
            return model
        dtype = kwargs.get("dtype") or model.dtype
        stored = _safetensors_keys(kwargs.get("checkpoint_files") or [])
        for name, record in self.quantization_config.modules.items():
            try:
                linear = model.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(
                    f"the checkpoint records compressed module {name!r}, the model has none"
                ) from exc
            if not isinstance(linear, nn.Linear):
                raise ValueError(
                    f"compressed module {name!r} is a {type(linear).__name__} in the model, not nn.Linear"
                )
            parent_name, _, child = name.rpartition(".")
            compressed = CompressedLinear(
                linear.in_features, linear.out_features, record["bias"], device="meta", dtype=dtype,
                gpu_form=record["gpu_form"], form=record.get(FORM_KEY, "auto"),
            )  # fmt: skip
            missing = [f"{name}.{key}" for key in compressed.state_dict() if f"{name}.{key}" not in stored]
            if stored and missing:
                raise ValueError(
                    f"config.json records {name!r} as compressed, but the weights lack {missing}: they "
                    "were not saved from the compressed model (remove quantization_config from config.json "
                    "to load them as they are)"
                )
            setattr(model.get_submodule(parent_name), child, compressed)
        return model

    def _process_model_after_weight_loading(self, model: PreTrainedModel, **kwargs: Any) -> PreTrainedModel:
        if self.pre_quantized:
            for module in model.modules():
                if isinstance(module, CompressedLinear):
                    # The loader set the buffers one by one: check and index them as a load does.
                    module.load_state_dict(dict(module.state_dict()), assign=True)
            check_not_meta(model, "after loading the compressed checkpoint")
        else:
            compress_(model, self.quantization_config.config, progress=True)
        record_compression(model, self.quantization_config.config)
        return model

    def get_state_dict_and_metadata(self, model: PreTrainedModel):
        record_compression(model, self.quantization_config.config)
        return None, {}

    def is_serializable(self, *args: Any, **kwargs: Any) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


def _safetensors_keys(files: list[str]) -> set[str]:
    """The tensor names in the checkpoint's safetensors files (headers only)."""
    keys: set[str] = set()
    for file in files:
        if str(file).endswith(".safetensors"):
            with safetensors.safe_open(file, "pt") as handle:
                keys.update(handle.keys())
    return keys


def record_compression(model: nn.Module, config: DeepCompressionConfig | None) -> None:
    """Record in every transformers model inside ``model`` (``model`` itself, or e.g. a
    sentence-transformers module's ``auto_model``) which of its modules are `CompressedLinear`,
    as its ``config.quantization_config`` with a quantizer attached, so that ``save_pretrained``
    writes a checkpoint that ``from_pretrained`` loads back compressed. ``config`` (None: keep
    the one recorded before) is the configuration the layers were compressed with."""
    for owner in _outermost_pretrained(model):
        modules = {
            name: {"gpu_form": m.gpu_form, "bias": m.bias is not None, FORM_KEY: m.form}
            for name, m in owner.named_modules()
            if isinstance(m, CompressedLinear)
        }
        if not modules:
            continue
        previous = getattr(owner.config, "quantization_config", None)
        if isinstance(previous, DeepCompressionQuantizationConfig) and config is None:
            config = previous.config
        recorded = DeepCompressionQuantizationConfig(config, modules)
        owner.config.quantization_config = recorded
        quantizer = getattr(owner, "hf_quantizer", None)
        if isinstance(quantizer, DeepCompressionHfQuantizer):
            quantizer.quantization_config = recorded
        else:
            owner.hf_quantizer = DeepCompressionHfQuantizer(recorded, pre_quantized=True)
        owner.is_quantized = True
        owner.quantization_method = QUANT_METHOD


def _outermost_pretrained(module: nn.Module):
    """The transformers models in ``module`` that no other one contains (an inner base model,
    such as LlamaForCausalLM's ``model``, shares its owner's config)."""
    if isinstance(module, PreTrainedModel):
        yield module
        return
    for child in module.children():
        yield from _outermost_pretrained(child)


def _register() -> None:
    installed = tuple(int(part) for part in transformers.__version__.split(".")[:2] if part.isdigit())
    if installed < MIN_TRANSFORMERS:
        raise ImportError(
            f"dc_kernels.hf needs transformers >= {'.'.join(map(str, MIN_TRANSFORMERS))} (its quantizer "
            f'hooks), found {transformers.__version__}: pip install "deep-compression[hf]"'
        )
    # Registering twice raises in transformers: a reload of this module keeps the first.
    if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(QUANT_METHOD)(DeepCompressionQuantizationConfig)
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(QUANT_METHOD)(DeepCompressionHfQuantizer)


_register()
register_conversion_hook(record_compression)

__all__ = [
    "MIN_TRANSFORMERS",
    "QUANT_METHOD",
    "DeepCompressionHfQuantizer",
    "DeepCompressionQuantizationConfig",
    "record_compression",
]
