"""The CPU form: C kernels (`sparse_linear.c`, built on first use) on the canonical tensors,
registered as `CompressedLinear`'s ``"cpu"`` backend."""

from __future__ import annotations

from dc_kernels.backends import Backend, register_backend
from dc_kernels.cpu.launch import CpuState, cpu_linear, decode, pack


def _view(canonical, packed, meta) -> CpuState:
    return CpuState(canonical, packed)


def _pack(module) -> tuple[list, list]:
    return pack(module.canonical_tensors()), []


def _cpu_only(device) -> bool:
    return device.type == "cpu"


register_backend(Backend("cpu", _view, cpu_linear, decode, _pack, _cpu_only))

__all__ = ["CpuState", "cpu_linear"]
