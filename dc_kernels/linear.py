"""`CompressedLinear`: a drop-in `torch.nn.Linear` whose weight is a Deep Compression layer.

The module holds the canonical compressed form of `compress.CompressedMatrix` in registered
buffers (so ``state_dict``, ``deepcopy``, pickling and ``.to()`` work as for any module):

* ``codebook``: float32[k], the shared weights (stays float32 under ``.half()``/``.to(dtype)``);
* ``row_ptr``: int64[out_features + 1], CSR row pointers;
* ``col_idx``: int16[nnz] when in_features <= 32768, else int32[nnz];
* ``codes``: uint8[nnz], the codebook index of every kept weight;
* ``code_bits``: uint8 scalar, the code width;

plus an optional ``bias`` parameter, as in nn.Linear. The layer runs in one of two forms
(``form``, by default ``"auto"``: the smaller in memory, `compress.size.smaller_form`): the
paper's sparse form, or dense codes (every weight a code, for moderate densities). Forward runs
the custom op ``dc_kernels::compressed_linear`` with the backend named by ``backend`` (see
`dc_kernels.backends`; ``"auto"`` runs the form's kernels for the device: on the CPU ``"cpu"``
or ``"dense_codes_cpu"``, on CUDA the sparse layer's ``gpu_form``, ``"fixed"`` (fastest) or
``"huffman"`` (least memory), or ``"dense_codes"``); tensors a backend derives from the buffers
(a packed form) are built when the module is created, loaded or moved, never while tracing.

When the backend's packed form holds the whole layer (every backend but ``"reference"``), the
per-weight ``col_idx`` and ``codes`` are not kept beside it: in host memory (the CPU backends)
they are not kept at all, and reading them (``layer.codes``, ``state_dict()``, `to_matrix`)
decodes them from the packed form, a new tensor each time; on a GPU they stay in host memory.
Either way the device holds only the packed form, the codebook, ``row_ptr`` and the bias
(`memory_bytes`), and backward and `weight` decode from the packed form on the device.

A layer built by the constructor (or moved off the meta device with ``to_empty()``) holds no
weights until a state dict with its buffers is loaded: until then `loaded` is False and forward
raises `LayerNotLoadedError` (on the meta device it still runs, for shape inference). Weight
dtypes are float32, float16 and bfloat16 (the kernels accumulate in float32): float64 is
refused when the layer is built or converted.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from compress.config import FORMS
from compress.matrix import CompressedMatrix, check_bits
from compress.one_shot import compress_matrix
from compress.size import compare_bytes, form_bits, pick_form
from dc_kernels.backends import AUTO, GPU_FORMS, canonical_name, get_backend, resolve
from dc_kernels.checks import SUPPORTED_DTYPES, check_strided
from dc_kernels.errors import CorruptLayerError, LayerNotLoadedError
from dc_kernels.ops import compressed_linear, dense_weight, direct_call, run_linear
from dc_kernels.reference import CanonicalTensors

# Columns fit int16 up to this many inputs (the kernels then read 2 bytes per kept weight).
INT16_MAX_IN_FEATURES = 2**15
# The per-weight canonical buffers: in host memory whenever a packed GPU form serves the layer.
_PER_WEIGHT = ("col_idx", "codes")
HOST = torch.device("cpu")


def column_dtype(in_features: int) -> torch.dtype:
    """The dtype of ``col_idx`` for a layer with ``in_features`` inputs."""
    return torch.int16 if in_features <= INT16_MAX_IN_FEATURES else torch.int32


class CompressedLinear(nn.Module):
    """y = x W^T + b with W stored pruned and weight-shared (see the module docstring).

    ``CompressedLinear(in_features, out_features, bias=True)`` builds an empty layer (no kept
    weight) to load a state dict into, like nn.Linear's constructor on the meta device; build a
    real layer with `from_linear` (prune and share now) or `from_matrix`.

    Input ``(..., in_features)`` in float32, float16 or bfloat16 (any strides), output
    ``(..., out_features)`` in the input's dtype, computed with float32 accumulation.
    """

    __constants__ = ("in_features", "out_features")
    #: The buffers holding the canonical compressed form (the state dict's keys beside ``bias``).
    CANONICAL_BUFFERS = ("codebook", "row_ptr", "col_idx", "codes", "code_bits")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = AUTO,
        gpu_form: str = "fixed",
        form: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features = in_features
        self.out_features = out_features
        self._weight_dtype = _weight_dtype(dtype or torch.float32)
        self._loaded = False
        self._backend = AUTO
        self._gpu_form = "fixed"
        self._form = "auto"
        self._effective_form = "sparse"  # what "auto" resolved to: `_refresh_form`
        # (backend name, its packed tensors and integers, the buffers' versions they were built from)
        self._packed: tuple[str, list[torch.Tensor], list[int], tuple | None] | None = None
        # col_idx and codes are not kept (their buffers hold None): the packed form holds them.
        self._dropped = False
        # Empty stand-ins for col_idx and codes, passed to the op by backends that never read them.
        self._stubs: tuple[torch.Tensor, torch.Tensor] | None = None
        # The backend's direct route (`Backend.direct`), the buffers, as (name, tensor, version),
        # it was made from (forward takes it only while they are unchanged) and the route's C++
        # call with those checks, or None.
        self._direct: tuple | None = None
        factory = {"device": device}
        self.register_buffer("codebook", torch.zeros(1, dtype=torch.float32, **factory))
        self.register_buffer("row_ptr", torch.zeros(out_features + 1, dtype=torch.int64, **factory))
        self.register_buffer("col_idx", torch.zeros(0, dtype=column_dtype(in_features), **factory))
        self.register_buffer("codes", torch.zeros(0, dtype=torch.uint8, **factory))
        self.register_buffer("code_bits", torch.tensor(1, dtype=torch.uint8, device=device))
        self._bits = 1
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=self._weight_dtype, **factory))
        else:
            self.register_parameter("bias", None)
        self.backend = backend
        self.gpu_form = gpu_form
        self.form = form

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_matrix(
        cls,
        matrix: CompressedMatrix,
        bias: torch.Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backend: str = AUTO,
        gpu_form: str = "fixed",
        form: str = "auto",
    ) -> CompressedLinear:
        """A layer computing ``matrix`` (out_features x in_features) plus ``bias``; ``dtype`` is
        the nominal weight dtype (of ``bias``, `weight` and `to_linear`; default: bias's dtype,
        else float32). The layer lives on ``device`` (default: bias's device, else CPU)."""
        if not isinstance(matrix, CompressedMatrix):
            raise TypeError(f"matrix must be a compress.CompressedMatrix, got {type(matrix).__name__}")
        out_features, in_features = matrix.shape
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (out_features,):
                shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
                raise ValueError(f"bias must be a tensor of shape ({out_features},), got {shape}")
            device = bias.device if device is None else device
            dtype = bias.dtype if dtype is None else dtype
        module = cls(
            in_features, out_features, bias is not None, device="meta", dtype=dtype, backend=backend,
            gpu_form=gpu_form, form=form,
        )  # fmt: skip
        module._set_matrix(matrix, torch.device(device or "cpu"))
        if bias is not None:
            module.bias = nn.Parameter(
                bias.detach().to(device=module.codebook.device, dtype=module._weight_dtype).clone()
            )
        return module

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        density: float | None = 0.1,
        bits: int = 5,
        init: str = "linear",
        seed: int = 0,
        *,
        quality: float | None = None,
        backend: str = AUTO,
        gpu_form: str = "fixed",
        form: str = "auto",
        name: str = "linear",
    ) -> CompressedLinear:
        """Prune ``linear``'s weight (to ``density``, or by the paper's ``quality`` rule when
        given) and share the kept weights with k-means (``bits``, ``init``, ``seed``; for the
        dense-codes form ``2**bits - 1`` shared weights and the zero code); one shot, no
        retraining. Keeps the bias, the device and the dtype of ``linear``."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"expected an nn.Linear, got {type(linear).__name__}")
        weight = linear.weight.detach()
        _weight_dtype(weight.dtype)
        matrix = compress_matrix(
            weight, None if quality is not None else density, bits, init, seed, quality=quality, name=name,
            form=form,
        )  # fmt: skip
        bias = None if linear.bias is None else linear.bias.detach()
        return cls.from_matrix(
            matrix,
            bias,
            device=weight.device,
            dtype=weight.dtype,
            backend=backend,
            gpu_form=gpu_form,
            form=form,
        )

    def _set_matrix(self, matrix: CompressedMatrix, device: torch.device) -> None:
        def tensor(array: np.ndarray, dtype: torch.dtype, on: torch.device = device) -> torch.Tensor:
            return torch.from_numpy(np.array(array)).to(device=on, dtype=dtype)

        self._buffers["codebook"] = tensor(matrix.codebook, torch.float32)
        self._buffers["row_ptr"] = tensor(matrix.row_ptr, torch.int64)
        # Built in host memory; `_repack` moves them to the device unless a packed form serves.
        self._buffers["col_idx"] = tensor(matrix.col_idx, column_dtype(self.in_features), HOST)
        self._buffers["codes"] = tensor(matrix.codes, torch.uint8, HOST)
        self._buffers["code_bits"] = torch.tensor(matrix.bits, dtype=torch.uint8, device=device)
        self._bits = matrix.bits
        self._loaded = True
        self._dropped = False
        self._refresh_form()
        self._repack()

    # ------------------------------------------------------------------ conversion
    def to_matrix(self) -> CompressedMatrix:
        """The canonical `compress.CompressedMatrix` of the layer (NumPy, CPU); validates it."""
        if self.codebook.is_meta:
            raise ValueError("a CompressedLinear on the meta device holds no values; load a state dict first")
        self._check_loaded()
        return self._matrix()

    def _matrix(self) -> CompressedMatrix:
        col_idx, codes = self._per_weight()
        try:
            return CompressedMatrix(
                (self.out_features, self.in_features),
                self.codebook.cpu().numpy(),
                self.row_ptr.cpu().numpy(),
                col_idx.cpu().to(torch.int32).numpy(),
                codes.cpu().numpy(),
                self._bits,
            )
        except (ValueError, TypeError) as exc:
            raise CorruptLayerError(f"the layer's buffers are inconsistent: {exc}") from exc

    def canonical_tensors(self) -> CanonicalTensors:
        """The canonical buffers (wherever they are; on a GPU served by a packed form, the
        per-weight ones are in host memory; in host memory, decoded from the packed form)."""
        return CanonicalTensors(self.codebook, self.row_ptr, *self._per_weight(), self.in_features)

    def _per_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(col_idx, codes): the buffers, or, when the packed form holds them, decoded from it."""
        if not self._dropped:
            return self._buffers["col_idx"], self._buffers["codes"]
        backend = get_backend(self._packed[0])
        stub = CanonicalTensors(self.codebook, self.row_ptr, *self._stubs, self.in_features)
        try:
            matrix = backend.to_matrix(backend.view(stub, self._packed[1], self._packed[2]))
        except (ValueError, TypeError) as exc:
            raise CorruptLayerError(f"the layer's packed form does not hold a valid layer: {exc}") from exc
        return (
            torch.from_numpy(matrix.col_idx.copy()).to(column_dtype(self.in_features)),
            torch.from_numpy(matrix.codes.copy()),
        )

    def __getattr__(self, name: str):
        if name in _PER_WEIGHT and self.__dict__.get("_dropped"):
            return self._per_weight()[_PER_WEIGHT.index(name)]
        return super().__getattr__(name)

    def to_linear(self) -> nn.Linear:
        """An nn.Linear with the decoded weights (exact), on this layer's device and dtype."""
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.codebook.device,
            dtype=self._weight_dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    @property
    def weight(self) -> torch.Tensor:
        """The decoded dense weight (out_features, in_features) in the layer's dtype: a new
        tensor on every access, for code that reads ``.weight`` of an nn.Linear directly (e.g.
        nn.MultiheadAttention's ``out_proj``); forward never builds it."""
        self._check_loaded()
        backend = resolve(self._backend, self.codebook.device, self._gpu_form, self._effective_form)
        dense = dense_weight(*self._op_tensors(backend), self.in_features, backend.name)
        return dense.to(self._weight_dtype)

    # ------------------------------------------------------------------ properties
    @property
    def bits(self) -> int:
        return self._bits

    @property
    def loaded(self) -> bool:
        """Whether the buffers hold a layer (built from one, or loaded from a state dict)."""
        return self._loaded

    @property
    def nnz(self) -> int:
        return int(self.row_ptr[-1]) if self._dropped else self.codes.numel()

    @property
    def density(self) -> float:
        return self.nnz / (self.in_features * self.out_features)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        self._backend = canonical_name(name)
        self._repack()

    @property
    def gpu_form(self) -> str:
        """``"fixed"`` (fixed-width kernels, fastest) or ``"huffman"`` (fused Huffman kernels,
        least memory): what backend ``"auto"`` runs on CUDA."""
        return self._gpu_form

    @gpu_form.setter
    def gpu_form(self, form: str) -> None:
        if form not in GPU_FORMS:
            raise ValueError(f"unknown gpu_form {form!r}; known: {GPU_FORMS}")
        self._gpu_form = form
        self._repack()

    @property
    def form(self) -> str:
        """How the weights are stored and run (`compress.config.FORMS`): ``"sparse"``,
        ``"dense_codes"`` or ``"auto"`` (the smaller in memory; see `effective_form`)."""
        return self._form

    @form.setter
    def form(self, form: str) -> None:
        if form not in FORMS:
            raise ValueError(f"unknown form {form!r}; known: {FORMS}")
        self._form = form
        self._refresh_form()
        self._repack()

    @property
    def effective_form(self) -> str:
        """The form the layer runs in: ``form``, with ``"auto"`` resolved for its weights."""
        return self._effective_form

    def _refresh_form(self) -> None:
        """Resolve ``"auto"`` for the current weights (`compress.size.form_bits`, from the kept
        positions: done when the weights change, not on moves)."""
        if self._form != "auto":
            self._effective_form = self._form
        elif self._loaded and not self.codebook.is_meta:
            col_idx = self._per_weight()[0]
            sizes = form_bits(
                (self.out_features, self.in_features), self.row_ptr.cpu().numpy(), col_idx.cpu().numpy(),
                self._bits, self.codebook.numel(),
            )  # fmt: skip
            self._effective_form = pick_form(sizes)

    def memory_bytes(self) -> int:
        """Bytes this layer holds on its device: buffers, bias and any backend-derived tensors
        there (on a GPU with a packed form serving, ``col_idx`` and ``codes`` are in host memory
        and not counted; see `host_bytes`)."""
        return self._bytes_on(self.codebook.device)

    def host_bytes(self) -> int:
        """Bytes of this layer kept in host memory while it lives on a GPU (0 on the CPU)."""
        return 0 if self.codebook.device == HOST else self._bytes_on(HOST)

    def _bytes_on(self, device: torch.device) -> int:
        tensors = [*self.buffers(recurse=False), *self.parameters(recurse=False)]
        if self._packed is not None:
            tensors += self._packed[1]
        return sum(t.numel() * t.element_size() for t in tensors if t.device == device)

    def dense_bytes(self) -> int:
        """Bytes of the nn.Linear this layer stands for (weight and bias, in the layer's dtype)."""
        size = torch.empty((), dtype=self._weight_dtype).element_size()
        return size * (
            self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)
        )

    @property
    def weight_dtype(self) -> torch.dtype:
        """The nominal dtype of the weight (of `weight`, `to_linear` and the bias)."""
        return self._weight_dtype

    def extra_repr(self) -> str:
        dense = f"dense {str(self._weight_dtype).removeprefix('torch.')}"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, bits={self.bits}, density={self.density:.4f}, "
            f"bytes={self.memory_bytes()} ({compare_bytes(self.dense_bytes(), self.memory_bytes(), dense)}), "
            f"backend={self.backend!r}, form={self._form!r}"
            + (f" ({self._effective_form})" if self._form == "auto" else "")
            + f", gpu_form={self.gpu_form!r}"
        )

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        direct = self._direct
        if direct is not None and not torch.compiler.is_compiling():  # tracing reads no versions
            bias = self._parameters.get("bias")
            recorded_bias = None
            if bias is not None and bias.requires_grad and torch.is_grad_enabled() and _float32_call(x, bias):
                # a bias to train and an x without gradient (a model called without no_grad):
                # autograd records the bias's add, the product has nothing to record
                recorded_bias, bias = bias, None
            if direct[2] is not None:  # these checks and the route in C++, for the kernels' batches
                y = direct[2](x, bias, self._buffers)
                if y is not None:
                    return y if recorded_bias is None else y.add_(recorded_bias)
            if _unchanged(self._buffers, direct[1]) and direct_call(x, bias):
                y = direct[0](x, bias)
                if y is not None:
                    return y if recorded_bias is None else y.add_(recorded_bias)
        if not self._loaded and not self.codebook.is_meta:
            self._check_loaded()
        if isinstance(x, torch.Tensor):
            check_strided(x)  # before the op: its dispatch would fail on a sparse or MKL-DNN x first
        backend = resolve(self._backend, x.device, self._gpu_form, self._effective_form)
        codebook, row_ptr, col_idx, codes, packed, meta = self._op_tensors(backend)
        op = run_linear if direct_call(x, self.bias) else compressed_linear
        return op(
            x, codebook, row_ptr, col_idx, codes, self.bias, packed, meta, self.in_features, backend.name
        )

    # ------------------------------------------------------------------ backend state
    def _op_tensors(self, backend) -> tuple:
        """(codebook, row_ptr, col_idx, codes, packed, packed_meta) for ``backend``'s ops: empty
        stand-ins for col_idx and codes when its packed tensors hold the layer."""
        if self._packed is None or self._packed[0] != backend.name or self._stale():
            self._repack(backend.name, strict=True)
        packed, meta = (self._packed[1], self._packed[2]) if self._packed is not None else ([], [])
        # (On the meta device nothing is packed: the buffers go, and the op reports the device.)
        serving = backend.holds_layer and self._stubs is not None
        col_idx, codes = self._stubs if serving else (self.col_idx, self.codes)
        return self.codebook, self.row_ptr, col_idx, codes, packed, meta

    def _stale(self) -> bool:
        """Whether the packed tensors were built from buffers replaced or changed in place since
        (backends that pack nothing are never stale; never while compiling: tracing reads no
        version counters)."""
        packed = self._packed
        if not packed[1] or torch.compiler.is_compiling():
            return False
        if packed[3] is None:  # packed under torch.inference_mode(): stale once buffers have versions
            return _watched(self._buffers) is not None
        return not _unchanged(self._buffers, packed[3])

    def _serving_packed(self) -> bool:
        """Whether the packed tensors hold the whole layer (their backend decodes them alone)."""
        return self._packed is not None and get_backend(self._packed[0]).holds_layer

    def _repack(self, name: str | None = None, strict: bool = False) -> None:
        """Build the derived tensors of the backend that runs on the buffers' device, then place
        ``col_idx`` and ``codes``: in host memory when those tensors serve alone on a GPU, not at
        all when they serve alone in host memory (`Backend.to_matrix`), else on the device. Not
        ``strict`` (after a move, a load, a setting), a failure is left for forward to report:
        e.g. backend "triton" on CPU, or `to_empty` buffers that hold no layer yet."""
        try:
            self._materialize()
        except CorruptLayerError:
            if strict:
                raise
            return  # forward finds the packed form stale and reports it
        self._own_versions()
        self._packed = None
        self._stubs = None
        self._direct = None
        device = self.codebook.device
        if device.type != "meta":
            try:
                backend = resolve(name or self._backend, device, self._gpu_form, self._effective_form)
                tensors, ints = backend.pack(self) if backend.pack is not None else ([], [])
                self._packed = (backend.name, tensors, ints, None)
            except (ValueError, TypeError):
                if strict:
                    raise
            self._stubs = (self.col_idx.new_empty(0, device=device), self.codes.new_empty(0, device=device))
        home = HOST if self._serving_packed() else device
        for buffer in _PER_WEIGHT:
            if self._buffers[buffer].device != home:
                self._buffers[buffer] = self._buffers[buffer].to(home)
        if device == HOST and self._serving_packed() and get_backend(self._packed[0]).to_matrix is not None:
            self._buffers.update(dict.fromkeys(_PER_WEIGHT))
            self._dropped = True
        if self._packed is not None:  # the buffers as placed are what the packed tensors hold
            self._packed = (*self._packed[:3], _watched(self._buffers))
            self._direct = self._direct_route()

    def _own_versions(self) -> None:
        """Buffers made under torch.inference_mode() keep no version counter, which the direct
        route's guard reads (without it every call took the op's path: a 384x384 layer at batch 1
        113 us against 16.5 us): copies made outside inference mode take their place, once."""
        if _watched(self._buffers) is not None:
            return
        with torch.inference_mode(False):
            for name, tensor in self._buffers.items():
                if tensor is not None and tensor.is_inference():
                    self._buffers[name] = tensor.clone()

    def _direct_route(self) -> tuple | None:
        """The packed backend's direct route, the buffers it depends on and, where the route is
        built in C++ (`dc_kernels.cpu.native`), its call with forward's checks (None: no route)."""
        backend = get_backend(self._packed[0])
        if backend.direct is None or not self._loaded or self._packed[3] is None or self._stubs is None:
            return None
        stub = CanonicalTensors(self.codebook, self.row_ptr, *self._stubs, self.in_features)
        route = backend.direct(backend.view(stub, self._packed[1], self._packed[2]))
        if route is None:
            return None
        guarded = getattr(route, "guarded", None)
        if guarded is not None:
            guarded = functools.partial(guarded, *route.native_args, self._packed[3])
        return route, self._packed[3], guarded

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self._direct is not None:  # its C++ call holds the kernels' addresses of the original
            self._direct = self._direct_route()

    def _materialize(self) -> None:
        """Put decoded ``col_idx`` and ``codes`` back into their buffers if they were not kept."""
        if self._dropped:
            self._buffers.update(zip(_PER_WEIGHT, self._per_weight()))
            self._dropped = False

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if not self._dropped:
            super()._save_to_state_dict(destination, prefix, keep_vars)
            return
        self._buffers.update(zip(_PER_WEIGHT, self._per_weight()))
        try:
            super()._save_to_state_dict(destination, prefix, keep_vars)
        finally:
            self._buffers.update(dict.fromkeys(_PER_WEIGHT))

    def _check_loaded(self) -> None:
        if not self._loaded and not self.codebook.is_meta:
            raise LayerNotLoadedError(
                f"CompressedLinear(in_features={self.in_features}, out_features={self.out_features}) holds "
                "no compressed weights yet: build it with CompressedLinear.from_matrix or from_linear, or "
                f"load a state dict with its buffers {self.CANONICAL_BUFFERS}"
            )

    def _apply(self, fn, recurse=True):
        codebook = self.codebook
        # Refuse a weight dtype the kernels cannot run (e.g. .double()) before anything changes.
        _weight_dtype(fn(torch.zeros((), dtype=self._weight_dtype, device=codebook.device)).dtype)
        self._materialize()
        # col_idx and codes are placed by `_repack` (maybe in host memory), not moved here: a move
        # to the GPU would copy them there and back. Only to or from the meta device (no values
        # to move) do they take ``fn``.
        per_weight = {name: self._buffers[name] for name in _PER_WEIGHT}
        for name in _PER_WEIGHT:
            self._buffers[name] = None
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers.update(per_weight)
        converted = self.codebook
        if converted.is_meta or codebook.is_meta:
            self._buffers.update({name: fn(t) for name, t in per_weight.items()})
        if codebook.is_meta and not converted.is_meta:
            self._loaded = False  # to_empty(): the new buffers hold no values yet
        if converted.dtype != torch.float32:
            # .half()/.to(dtype) would round the shared weights: keep them float32, on the new device.
            self._buffers["codebook"] = codebook.to(device=converted.device)
        if converted.is_floating_point():
            self._weight_dtype = converted.dtype
        self._repack()
        return self

    # ------------------------------------------------------------------ state dict
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        self._materialize()  # a partial state dict completes the current layer
        # The number of kept weights is data: take the incoming buffers' sizes, not ours.
        for name in self.CANONICAL_BUFFERS:
            incoming = state_dict.get(prefix + name)
            current = self._buffers[name]
            if isinstance(incoming, torch.Tensor) and incoming.shape != current.shape:
                self._buffers[name] = torch.empty(incoming.shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # load_state_dict(assign=True) takes the incoming tensors as they are: restore our dtypes.
        expected = {
            "codebook": torch.float32,
            "row_ptr": torch.int64,
            "col_idx": column_dtype(self.in_features),
            "codes": torch.uint8,
            "code_bits": torch.uint8,
        }
        for name, dtype in expected.items():
            if self._buffers[name].dtype != dtype:
                self._buffers[name] = self._buffers[name].to(dtype)
        incoming_bits = state_dict.get(prefix + "code_bits")
        if isinstance(incoming_bits, torch.Tensor) and not incoming_bits.is_meta:
            self._bits = check_bits(int(incoming_bits), f"{prefix}code_bits")
        incoming = [prefix + name in state_dict for name in self.CANONICAL_BUFFERS]
        if any(incoming):
            self._check_state(prefix)
            # Loaded once every buffer came from a state dict (or completed a loaded layer).
            self._loaded = self._loaded or all(incoming)
            self._refresh_form()
        self._repack()

    def _check_state(self, prefix: str) -> None:
        shapes = {name: tuple(self._buffers[name].shape) for name in self.CANONICAL_BUFFERS}
        if shapes["row_ptr"] != (self.out_features + 1,) or shapes["code_bits"] != ():
            raise ValueError(f"{prefix}: buffer shapes {shapes} do not fit a {self.out_features}-row layer")
        if self.codebook.is_meta:
            return
        try:
            self._matrix()
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{prefix or 'state dict'}: invalid compressed layer: {exc}") from exc


def _watched(buffers: dict) -> tuple | None:
    """(name, tensor, version) of each buffer, for `_unchanged`; None when a buffer keeps no
    version counter (made under torch.inference_mode())."""
    try:
        return tuple((name, t, None if t is None else t._version) for name, t in buffers.items())
    except RuntimeError:
        return None


def _float32_call(x, bias: torch.Tensor) -> bool:
    """x a float32 tensor without gradient (its product needs no autograd record) and a float32
    bias (added to the product in the dtype the kernel would add it in)."""
    return type(x) is torch.Tensor and x.dtype == bias.dtype == torch.float32 and not x.requires_grad


def _unchanged(buffers: dict, watched: tuple) -> bool:
    """Whether each of the ``watched`` (name, tensor, version) is still that buffer, unchanged."""
    for name, tensor, version in watched:
        if buffers.get(name) is not tensor or (tensor is not None and tensor._version != version):
            return False
    return True


def _weight_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if CompressedLinear can run with it (a float dtype of `SUPPORTED_DTYPES`); else
    TypeError. Integer dtypes (from ``.to(torch.int8)``, say) are not weight dtypes: kept."""
    if dtype.is_floating_point and dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"CompressedLinear runs float32, float16 and bfloat16 (float32 accumulation), not {dtype}: "
            "convert the model to one of those first (e.g. model.float())"
        )
    return dtype
