"""How a packed host-or-device layout is kept in a `CompressedLinear`: its tensors and its integer
metadata, in a fixed order (the module's packed state), and rebuilt from them with the layer's
codebook. Shared by the CPU sparse layout (`dc_kernels.cpu.layout`) and the dense-codes layout
(`dc_kernels.dense_codes.layout`), dataclasses whose fields are the metadata, then the tensors,
then the codebook."""

from __future__ import annotations

from typing import ClassVar

import torch


class LayoutState:
    """`from_state`, `tensors` and `metadata` over the fields named by ``TENSOR_NAMES`` and
    ``METADATA_NAMES``."""

    TENSOR_NAMES: ClassVar[tuple[str, ...]]
    METADATA_NAMES: ClassVar[tuple[str, ...]]

    @classmethod
    def from_state(cls, tensors: list[torch.Tensor], metadata: list[int], codebook: torch.Tensor):
        """Rebuild from `tensors()` and `metadata()` (ValueError when their counts do not fit)."""
        if len(tensors) != len(cls.TENSOR_NAMES) or len(metadata) != len(cls.METADATA_NAMES):
            raise ValueError(f"expected tensors {cls.TENSOR_NAMES} and metadata {cls.METADATA_NAMES}")
        return cls(*(int(m) for m in metadata), *tensors, codebook)

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.TENSOR_NAMES]

    def metadata(self) -> list[int]:
        return [int(getattr(self, name)) for name in self.METADATA_NAMES]
