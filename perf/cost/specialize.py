"""How a Triton launch specializes a kernel: the signature, constants and attributes it compiles with.

At a launch, Triton's JIT turns every argument into a type and a specialization key: an integer
equal to 1 becomes the constant 1; integers and pointers divisible by 16 (data pointers of tensors
16-byte aligned) get the ``tt.divisibility = 16`` attribute; other integers are ``i32`` or
``i64`` by value; ``constexpr`` parameters are compiled in. `specialize` runs the installed
Triton's own binder on the recorded arguments (`perf.cost.launches`), so the compiled code is the
one a real launch gets. Where a Triton release lacks those internals (checked on 3.6 and 3.9),
`rule_specialization` applies the rule above, and the result says which path ran.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

DIVISIBILITY = 16
_DTYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int8: "i8",
    torch.int16: "i16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.uint8: "u8",
    torch.bool: "i1",
}


@dataclass(frozen=True)
class Specialization:
    """What `triton.compile` receives for one launch: argument types (``constexpr`` for compiled-in
    values), the compiled-in values by argument position, attributes by position, compile
    options, and ``source``: ``"triton-jit"`` (the installed Triton's binder) or ``"rule"``."""

    signature: dict[str, str]
    constexprs: dict[tuple, Any]
    attrs: dict[tuple, list]
    options: dict[str, Any]
    source: str
    arg_names: tuple[str, ...] = field(default=())
    declared_constexprs: frozenset[str] = field(default=frozenset())

    def constant_one(self) -> list[str]:
        """Runtime arguments (not declared ``constexpr``) that the launch compiled in as 1."""
        return [
            n
            for k, n in enumerate(self.arg_names)
            if n not in self.declared_constexprs
            and self.signature[n] == "constexpr"
            and self.constexprs.get((k,)) == 1
        ]

    def divisible(self) -> list[str]:
        """Arguments compiled with ``tt.divisibility = 16``."""
        return [
            self.arg_names[k[0]]
            for k, v in self.attrs.items()
            if len(k) == 1 and any(a[0] == "tt.divisibility" for a in v)
        ]

    def key(self) -> str:
        """A stable text key of everything that decides the compiled code."""
        consts = sorted((k, repr(v)) for k, v in self.constexprs.items())
        attrs = sorted((k, repr(v)) for k, v in self.attrs.items())
        options = sorted((k, repr(v)) for k, v in self.options.items())
        return repr((sorted(self.signature.items()), consts, attrs, options))


def specialize(kernel, args: tuple, kwargs: dict, arch: int) -> Specialization:
    """The specialization a launch ``kernel[grid](*args, **kwargs)`` compiles for ``sm_<arch>``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", arch, 32))
    try:
        from triton.runtime.jit import create_function_from_signature

        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        bound, spec, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, spec, options)
    except (ImportError, AttributeError, TypeError):
        return rule_specialization(kernel, args, kwargs)
    return Specialization(
        dict(signature),
        dict(constexprs),
        dict(attrs),
        dict(vars(options)),
        "triton-jit",
        tuple(kernel.arg_names),
        _declared_constexprs(kernel),
    )


def rule_specialization(kernel, args: tuple, kwargs: dict) -> Specialization:
    """The specialization by the documented rule (module docstring), without Triton's binder."""
    names = list(kernel.arg_names)
    constexpr_names = _declared_constexprs(kernel)
    values = dict(zip(names, args))
    values.update({k: v for k, v in kwargs.items() if k in names})
    missing = [n for n in names if n not in values]
    if missing:
        raise TypeError(f"{kernel.__name__}: launch passes no value for {missing}")
    signature, constexprs, attrs = {}, {}, {}
    for k, name in enumerate(names):
        value = values[name]
        if name in constexpr_names or value is None:
            signature[name], constexprs[(k,)] = "constexpr", value
            continue
        ty, divisible = _arg_type(name, value)
        if ty == "constexpr":
            signature[name], constexprs[(k,)] = "constexpr", value
            continue
        signature[name] = ty
        attrs[(k,)] = [["tt.divisibility", DIVISIBILITY]] if divisible else []
    options = {k: v for k, v in kwargs.items() if k not in names}
    return Specialization(signature, constexprs, attrs, options, "rule", tuple(names), constexpr_names)


def _declared_constexprs(kernel) -> frozenset[str]:
    """Parameters annotated ``tl.constexpr`` (as an object, or as text under postponed annotations)."""
    import triton.language as tl

    def constexpr(annotation) -> bool:
        if isinstance(annotation, str):
            return annotation.rsplit(".", 1)[-1] == "constexpr"
        return annotation is tl.constexpr

    parameters = inspect.signature(kernel.fn).parameters.values()
    return frozenset(p.name for p in parameters if constexpr(p.annotation))


def _arg_type(name: str, value) -> tuple[str, bool]:
    if isinstance(value, torch.Tensor):
        if value.dtype not in _DTYPES:
            raise TypeError(f"argument {name}: no Triton pointer type for {value.dtype}")
        return f"*{_DTYPES[value.dtype]}", value.data_ptr() % DIVISIBILITY == 0
    if isinstance(value, bool):
        return "u1", False
    if isinstance(value, int):
        if value == 1:
            return "constexpr", False
        ty = "i32" if -(2**31) <= value < 2**31 else "u64" if value >= 2**63 else "i64"
        return ty, value % DIVISIBILITY == 0
    if isinstance(value, float):
        return "fp32", False
    raise TypeError(f"argument {name}: cannot specialize a {type(value).__name__}")
