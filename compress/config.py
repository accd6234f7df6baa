"""Configuration of the Deep Compression pipeline: global defaults plus per-layer overrides.

Plain data (JSON round trip, a version field), validated at construction. Per-layer settings
are resolved by module name with :meth:`DeepCompressionConfig.for_layer`::

    config = DeepCompressionConfig(
        density=0.1, bits=5, index_bits=5,
        layers={"fc3": {"density": 0.3}, r"blocks\\.\\d+\\.mlp\\..*": {"bits": 4}},
        skip=("lm_head",),
    )
    config.for_layer("fc3")  # LayerConfig(density=0.3, quality=None, bits=5, index_bits=5, ...)
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from compress.errors import ConfigError
from compress.kmeans import INITS
from compress.matrix import MAX_BITS
from compress.relative_index import MAX_INDEX_BITS

CONFIG_VERSION = 1
SUPPORTED_MODULE_TYPES = ("Linear", "Conv2d")
# The settings that per-layer overrides may change.
LAYER_FIELDS = (
    "density", "quality", "bits", "index_bits", "init", "gpu_form", "form",
    "pruning", "quantization", "damping", "block_size",
)  # fmt: skip
# Which weights one-shot compression keeps: largest magnitude (the paper's rule, no data needed),
# largest |weight| x input norm (Wanda, Sun et al. 2023) or by the optimal brain surgeon with
# updates of the kept weights (SparseGPT, Frantar and Alistarh 2023); see compress.obs.
PRUNINGS = ("magnitude", "wanda", "obs")
# How the kept weights get their shared values: k-means (the paper's), k-means weighted by the
# second moment of each weight's input, or GPTQ-style rounding to the codebook with error
# feedback through the inverse Hessian, then a codebook refit (Frantar et al. 2023).
QUANTIZATIONS = ("kmeans", "weighted-kmeans", "obs")
# How a layer's weights are stored and run: the paper's sparse form (kept positions as relative
# indices, a code per kept weight) or dense codes (a code per weight, pruned ones the zero code,
# for moderate densities); "auto" takes the smaller in memory (`compress.size.smaller_form`).
WEIGHT_FORMS = ("sparse", "dense_codes")
FORMS = ("auto", *WEIGHT_FORMS)


@dataclass(frozen=True)
class LayerConfig:
    """Effective settings of one layer.

    Pruning keeps ``|w| > quality * std`` when ``quality`` is set, else the ``density`` share of
    largest-magnitude weights. ``bits`` is the code width (codebook of at most ``2**bits``
    shared weights), ``index_bits`` the width of the relative index of the storage format.
    ``gpu_form`` names how the layer runs on a GPU once deployed; `compress` only stores it (the
    deployment side, ``dc_kernels``, knows the forms and refuses unknown names). ``form`` (one of
    `FORMS`) is how its weights are stored: ``"sparse"`` (the paper's), ``"dense_codes"`` (every
    weight a code, pruned ones a code reserved for zero: k-means then fits ``2**bits - 1``
    shared weights) or ``"auto"``, the smaller of the two in memory, decided after pruning.

    One-shot compression with calibration inputs (``compress.calibrated_compress``) also reads
    ``pruning`` (one of `PRUNINGS`), ``quantization`` (one of `QUANTIZATIONS`), ``damping``
    (added to the layer's input Hessian: that share of its mean diagonal, >= 0) and
    ``block_size`` (columns per lazy-update block of the OBS sweeps). The defaults, magnitude
    pruning and k-means, need no data and give the same layers as without calibration.
    """

    density: float = 0.1
    quality: float | None = None
    bits: int = 5
    index_bits: int = 5
    init: str = "linear"
    gpu_form: str = "fixed"
    form: str = "auto"
    pruning: str = "magnitude"
    quantization: str = "kmeans"
    damping: float = 0.1
    block_size: int = 128

    def __post_init__(self) -> None:
        _check_layer_settings(dataclasses.asdict(self), "")


@dataclass(frozen=True)
class DeepCompressionConfig:
    """Global settings, per-layer overrides and the selection of layers to compress.

    * ``density``, ``quality``, ``bits``, ``index_bits``, ``init``, ``gpu_form``, ``form``,
      ``pruning``, ``quantization``, ``damping``, ``block_size``: the defaults of every layer (see
      :class:`LayerConfig`).
    * ``layers``: overrides, ``{pattern: {setting: value}}``. A pattern matches a module name
      exactly or as a regular expression (``re.fullmatch``). Every matching pattern applies, in
      order, later ones winning; an exact name applies last. An override giving ``density``
      without ``quality`` switches that layer to density pruning.
    * ``skip``: names or regular expressions of modules never compressed (e.g. ``"lm_head"``).
    * ``module_types``: the module classes compressed (``"Linear"``, ``"Conv2d"``).
    * ``prune_stages``: iterative pruning in that many stages (stage s of S keeps
      ``density ** (s / S)``, or uses ``quality * s / S``), retraining in between.
    * ``l2``: strength of the L2 penalty for retraining (:meth:`compress.Compressor.l2_penalty`).
    * ``seed``: seeds k-means's random initialization.
    """

    density: float = 0.1
    quality: float | None = None
    bits: int = 5
    index_bits: int = 5
    init: str = "linear"
    layers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    skip: tuple[str, ...] = ()
    module_types: tuple[str, ...] = SUPPORTED_MODULE_TYPES
    prune_stages: int = 1
    l2: float = 0.0
    seed: int = 0
    gpu_form: str = "fixed"
    form: str = "auto"
    pruning: str = "magnitude"
    quantization: str = "kmeans"
    damping: float = 0.1
    block_size: int = 128
    version: int = CONFIG_VERSION

    #: The name Hugging Face transformers knows this method by, so that the config can be passed
    #: as ``from_pretrained(..., quantization_config=config)`` (``dc_kernels.hf`` registers it).
    quant_method: ClassVar[str] = "deep_compression"

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version!r} is not supported (this library reads 1)")
        object.__setattr__(self, "skip", _as_str_tuple(self.skip, "skip"))
        object.__setattr__(self, "module_types", _as_str_tuple(self.module_types, "module_types"))
        unknown = [t for t in self.module_types if t not in SUPPORTED_MODULE_TYPES]
        if unknown:
            raise ConfigError(
                f"module_types {unknown} are not supported; supported: {SUPPORTED_MODULE_TYPES}"
            )
        _check_layer_settings({f: getattr(self, f) for f in LAYER_FIELDS}, "")
        if not isinstance(self.layers, Mapping):
            raise ConfigError(f"layers must map patterns to settings, got {type(self.layers).__name__}")
        layers = {}
        for pattern, overrides in self.layers.items():
            _compile(pattern, "layers")
            if not isinstance(overrides, Mapping):
                raise ConfigError(f"layers[{pattern!r}] must be a mapping of settings, got {overrides!r}")
            bad = sorted(set(overrides) - set(LAYER_FIELDS))
            if bad:
                raise ConfigError(f"layers[{pattern!r}]: unknown settings {bad}; allowed: {LAYER_FIELDS}")
            _check_layer_settings(dict(overrides), f"layers[{pattern!r}]: ")
            layers[pattern] = dict(overrides)
        object.__setattr__(self, "layers", layers)
        for pattern in self.skip:
            _compile(pattern, "skip")
        for name, low in (("prune_stages", 1), ("seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
        if (
            isinstance(self.l2, bool)
            or not isinstance(self.l2, (int, float))
            or not 0 <= self.l2 < float("inf")
        ):
            raise ConfigError(f"l2 must be a finite float >= 0, got {self.l2!r}")

    # ------------------------------------------------------------------ resolution
    def for_layer(self, name: str) -> LayerConfig:
        """The effective settings of the module called ``name``."""
        settings = {f: getattr(self, f) for f in LAYER_FIELDS}
        matching = [p for p in self.layers if p != name and re.fullmatch(p, name)]
        if name in self.layers:
            matching.append(name)
        for pattern in matching:
            overrides = self.layers[pattern]
            if "density" in overrides and "quality" not in overrides:
                settings["quality"] = None
            settings.update(overrides)
        return LayerConfig(**settings)

    def is_skipped(self, name: str) -> bool:
        """True when ``name`` is in the skip list (exactly or as a regular expression)."""
        return any(p == name or re.fullmatch(p, name) for p in self.skip)

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["layers"] = {k: dict(v) for k, v in self.layers.items()}
        out["skip"] = list(self.skip)
        out["module_types"] = list(self.module_types)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeepCompressionConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("skip", "module_types"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        return cls(**values)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeepCompressionConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _check_layer_settings(settings: Mapping[str, Any], where: str) -> None:
    if "density" in settings:
        density = settings["density"]
        if not _is_number(density) or not 0 < density <= 1:
            raise ConfigError(f"{where}density must be in (0, 1], got {density!r}")
    quality = settings.get("quality")
    if quality is not None and not (_is_number(quality) and 0 <= quality < float("inf")):
        raise ConfigError(f"{where}quality must be None or a finite float >= 0, got {quality!r}")
    for key, top in (("bits", MAX_BITS), ("index_bits", MAX_INDEX_BITS), ("block_size", None)):
        if key in settings:
            value = settings[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= (top or value):
                span = f"in 1..{top}" if top else ">= 1"
                raise ConfigError(f"{where}{key} must be an int {span}, got {value!r}")
    choices = {"init": INITS, "pruning": PRUNINGS, "quantization": QUANTIZATIONS, "form": FORMS}
    for key, allowed in choices.items():
        if key in settings and settings[key] not in allowed:
            raise ConfigError(f"{where}{key} must be one of {allowed}, got {settings[key]!r}")
    if "gpu_form" in settings and not (isinstance(settings["gpu_form"], str) and settings["gpu_form"]):
        raise ConfigError(f"{where}gpu_form must be a non-empty string, got {settings['gpu_form']!r}")
    damping = settings.get("damping", 0.0)
    if not (_is_number(damping) and 0 <= damping < float("inf")):
        raise ConfigError(f"{where}damping must be a finite float >= 0, got {damping!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError as exc:
        raise ConfigError(f"{name} must be a sequence of strings, got {value!r}") from exc
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{name} must hold strings, got {items!r}")
    return items


def _compile(pattern: Any, where: str) -> re.Pattern:
    if not isinstance(pattern, str):
        raise ConfigError(f"{where}: patterns must be strings, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: {pattern!r} is not a valid regular expression ({exc})") from exc
