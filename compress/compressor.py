"""The pipeline's lifecycle object: prune with retraining, share weights, fine-tune, finalize.

The library never owns the data or the training loop; the user's loop calls in::

    compressor = Compressor(model, DeepCompressionConfig(density=0.1, bits=5, prune_stages=3))
    compressor.prepare()                    # stage 1 of the pruning schedule
    for stage in range(3):
        if stage:
            compressor.prune()              # next stage: prune more
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
        for x, y in data:                   # retrain with the masks held
            loss = loss_fn(model(x), y) + compressor.l2_penalty()
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            compressor.step()               # pruned weights exactly zero again
    compressor.share()                      # k-means; weights become codebook[codes] * mask
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)  # now trains the centroids
    ...                                     # fine-tune with the same loop
    layers = compressor.finalize()          # {module name: CompressedMatrix}
    compress.size_table(layers)

After ``finalize()`` the model holds plain weights equal to the decoded compressed layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.config import DeepCompressionConfig, LayerConfig
from compress.errors import ConfigError, UnsupportedModuleError
from compress.matrix import CompressedMatrix
from compress.one_shot import share_matrix
from compress.pruning import (
    apply_mask,
    check_weight,
    l2_penalty,
    magnitude_mask,
    mask_gradient,
    threshold_mask,
)
from compress.size import size_table
from compress.weight_sharing import SharedWeight, share_weights, unshare

SUPPORTED_MODULES: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Conv2d": nn.Conv2d}
PHASES = ("created", "pruning", "sharing", "finalized")


@dataclass
class _Layer:
    name: str
    module: nn.Module
    config: LayerConfig
    mask: torch.Tensor | None = None
    dense_std: float = 0.0
    hook: torch.utils.hooks.RemovableHandle | None = None
    shared: SharedWeight | None = field(default=None, repr=False)


class Compressor:
    """Deep Compression of ``model``'s layers as configured (see the module docstring).

    ``filter(name, module) -> bool`` selects the modules to compress instead of the config's
    ``module_types``; it is called on leaf modules (no children) and must select only
    ``nn.Linear`` / ``nn.Conv2d`` ones (:class:`UnsupportedModuleError` otherwise). The
    config's ``skip`` list applies either way.
    """

    def __init__(
        self,
        model: nn.Module,
        config: DeepCompressionConfig | None = None,
        *,
        filter: Callable[[str, nn.Module], bool] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        config = DeepCompressionConfig() if config is None else config
        if not isinstance(config, DeepCompressionConfig):
            raise TypeError(f"config must be a DeepCompressionConfig, got {type(config).__name__}")
        self.model = model
        self.config = config
        self.phase = "created"
        self.stage = 0
        self.steps = 0
        self._layers = [_Layer(name, module, config.for_layer(name)) for name, module in self._select(filter)]

    # ------------------------------------------------------------------ selection
    def _select(self, filter: Callable | None) -> list[tuple[str, nn.Module]]:
        chosen = []
        allowed = tuple(SUPPORTED_MODULES[t] for t in self.config.module_types)
        for name, module in self.model.named_modules():
            if self.config.is_skipped(name):
                continue
            if filter is None:
                if not isinstance(module, allowed):
                    continue
            elif next(module.children(), None) is not None or not filter(name, module):
                continue  # the filter sees leaf modules only, never containers
            if not isinstance(module, tuple(SUPPORTED_MODULES.values())):
                raise UnsupportedModuleError(
                    f"module {name!r} of type {type(module).__name__} was selected, but only "
                    f"{', '.join(SUPPORTED_MODULES)} modules can be compressed"
                )
            if parametrize.is_parametrized(module, "weight"):
                raise UnsupportedModuleError(f"module {name!r}: its weight is already parametrized")
            chosen.append((name, module))
        if not chosen:
            how = "the filter, called as filter(name, module)" if filter is not None else (
                f"module_types={self.config.module_types}"
            )
            raise ConfigError(
                f"no module of {type(self.model).__name__} was selected ({how}, skip={self.config.skip})"
            )
        return chosen

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self._layers]

    def masks(self) -> dict[str, torch.Tensor]:
        """The current keep-masks by module name (pruning and sharing phases)."""
        return {layer.name: layer.mask for layer in self._layers if layer.mask is not None}

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> Compressor:
        """Check the selected layers and prune them to the first stage of the schedule."""
        self._expect("created", "prepare")
        for layer in self._layers:
            weight = layer.module.weight
            check_weight(weight, layer.name)
            layer.dense_std = float(weight.detach().to(torch.float32).std()) if weight.numel() > 1 else 0.0
            layer.mask = torch.ones_like(weight, dtype=torch.bool)
            layer.hook = mask_gradient(weight, layer.mask)
        self.phase = "pruning"
        self.prune()
        return self

    def prune(self) -> int:
        """Advance to the next pruning stage (masks only shrink); returns the stage (1-based)."""
        self._expect("pruning", "prune")
        stages = self.config.prune_stages
        if self.stage >= stages:
            raise ConfigError(f"all {stages} pruning stages are done (config.prune_stages={stages})")
        self.stage += 1
        fraction = self.stage / stages
        for layer in self._layers:
            weight = layer.module.weight
            settings = layer.config
            if settings.quality is not None:
                mask = threshold_mask(
                    weight, settings.quality * fraction, std=layer.dense_std, keep=layer.mask, name=layer.name
                )
            else:
                mask = magnitude_mask(weight, settings.density**fraction, keep=layer.mask, name=layer.name)
            layer.mask.copy_(mask)  # in place: the gradient hook holds this tensor
            apply_mask(weight, layer.mask)
        return self.stage

    def step(self) -> None:
        """Call after every optimizer step: pruned weights are set exactly to zero again.

        (While sharing, the parametrization already keeps them zero; the call only counts.)
        """
        if self.phase not in ("pruning", "sharing"):
            raise ConfigError(f"step() needs prepare() first (phase is {self.phase!r})")
        self.steps += 1
        if self.phase == "pruning":
            for layer in self._layers:
                apply_mask(layer.module.weight, layer.mask)

    def share(self) -> None:
        """End pruning (remaining stages are applied at once) and share each layer's weights:
        from here the layers' trainable parameters are their codebooks. Build the optimizer
        again after this call."""
        self._expect("pruning", "share")
        while self.stage < self.config.prune_stages:
            self.prune()
        for layer in self._layers:
            layer.hook.remove()
            layer.hook = None
            layer.shared = share_weights(
                layer.module,
                layer.mask,
                layer.config.bits,
                init=layer.config.init,
                seed=self.config.seed,
                name=layer.name,
            )
        self.phase = "sharing"

    def finalize(self) -> dict[str, CompressedMatrix]:
        """The compressed layers by module name; the model keeps plain weights equal to them."""
        if self.phase == "pruning":
            self.share()
        self._expect("sharing", "finalize")
        layers = {layer.name: layer.shared.matrix() for layer in self._layers}
        for layer in self._layers:
            unshare(layer.module)
            layer.shared = None
        self.phase = "finalized"
        return layers

    # ------------------------------------------------------------------ reading
    def compressed_layers(self) -> dict[str, CompressedMatrix]:
        """The layers as they would be finalized now, without changing the model (while
        pruning, the kept weights are clustered one-shot)."""
        if self.phase == "sharing":
            return {layer.name: layer.shared.matrix() for layer in self._layers}
        self._expect("pruning", "compressed_layers")
        return {
            layer.name: share_matrix(
                check_weight(layer.module.weight, layer.name),
                layer.mask.reshape(layer.mask.shape[0], -1),
                layer.config.bits,
                init=layer.config.init,
                seed=self.config.seed,
                name=layer.name,
            )
            for layer in self._layers
        }

    def report(self) -> pd.DataFrame:
        """The size table (``compress.size_table``) of the layers as they stand now."""
        index_bits = {layer.name: layer.config.index_bits for layer in self._layers}
        return size_table(self.compressed_layers(), index_bits)

    def l2_penalty(self) -> torch.Tensor:
        """``config.l2 * sum(w**2)`` over the compressed layers: add it to the retraining loss."""
        return l2_penalty((layer.module.weight for layer in self._layers), self.config.l2)

    def _expect(self, phase: str, action: str) -> None:
        if self.phase != phase:
            raise ConfigError(f"{action}() needs phase {phase!r}, but the compressor is in {self.phase!r}")
