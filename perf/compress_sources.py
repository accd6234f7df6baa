"""What `dcomp compress` reads and writes: a Hugging Face model folder or a plain safetensors file.

* A folder with ``config.json`` (a transformers model, as ``save_pretrained`` or the Hub lays it
  out; sentence-transformers folders too): the model is built with the class its config names
  and loaded with ``from_pretrained``; the output folder gets ``save_pretrained``'s files (the
  compressed layers' buffers in ``model.safetensors``, ``quantization_config`` in
  ``config.json``) and a copy of every other file of the source (tokenizer, pooling, ...), so
  it loads wherever the source did once ``dc_kernels.hf`` is imported. Needs the ``hf`` extra.
* A ``.safetensors`` file (a state dict): names carry no module types, so every 2-D
  floating-point ``<name>.weight`` (with ``<name>.bias`` when present) stands for an nn.Linear
  called ``<name>`` and every other tensor is kept as it is; the output is a
  `dc_kernels.save_compressed` checkpoint that ``dc_kernels.load_compressed(model, path)`` loads
  into the model the state dict came from. Embeddings are 2-D ``.weight`` tensors too: put them
  in the config's ``skip`` (``--dry-run`` lists what would be compressed).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

# Files of a model folder that hold weights (``save_pretrained`` writes them anew).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".safetensors.index.json",
                   ".bin.index.json")  # fmt: skip
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


class SourceError(ValueError):
    """A source `dcomp compress` cannot read (named, with the reason)."""


@dataclass
class Source:
    """A model to compress, read from ``path``: ``kind`` is ``"huggingface"`` or ``"safetensors"``."""

    path: Path
    kind: str
    model: nn.Module

    def weight_bytes(self) -> int:
        """Bytes of the source's weight files on disk."""
        return _weight_bytes(self.path)

    def save(self, out: Path) -> int:
        """Write the (compressed) model to ``out``; returns the bytes of its weight files."""
        if self.kind == "huggingface":
            out.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(out)
            for item in self.path.iterdir():
                if (
                    item.name != "config.json"
                    and not _is_weight_file(item)
                    and not (out / item.name).exists()
                ):
                    copy = shutil.copytree if item.is_dir() else shutil.copy2
                    copy(item, out / item.name)
        else:
            from dc_kernels.checkpoint import save_compressed

            save_compressed(self.model, out)
        return _weight_bytes(out)


def open_source(path: str | Path, *, meta: bool = False) -> Source:
    """The model at ``path`` (see the module docstring); ``meta`` builds it on the meta device
    without reading any weight (for a plan)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SourceError(f"{path} is a folder without config.json: not a Hugging Face model folder")
        return Source(path, "huggingface", _huggingface_model(path, meta))
    if path.is_file():
        if path.suffix != ".safetensors":
            raise SourceError(f"{path}: expected a .safetensors file or a Hugging Face model folder")
        return Source(path, "safetensors", module_from_state_dict(_read_safetensors(path, meta)))
    raise SourceError(f"{path} does not exist")


def _huggingface_model(path: Path, meta: bool) -> nn.Module:
    try:
        import transformers
    except ImportError as exc:
        raise SourceError(
            f"{path} is a Hugging Face model folder: reading it needs transformers "
            '(pip install "deep-compression[hf]")'
        ) from exc
    config = transformers.AutoConfig.from_pretrained(path)
    names = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, names[0], None) if names else None
    model_class = model_class or transformers.AutoModel
    if meta:
        with torch.device("meta"):
            return (
                model_class.from_config(config)
                if model_class is transformers.AutoModel
                else model_class(config)
            )
    return model_class.from_pretrained(path).eval()


def _read_safetensors(path: Path, meta: bool) -> dict[str, torch.Tensor]:
    try:
        if not meta:
            return safetensors.torch.load_file(path)
        with safetensors.safe_open(path, "pt") as f:
            tensors = {}
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                piece = f.get_slice(key)
                dtype = SAFETENSORS_DTYPES.get(piece.get_dtype())
                if dtype is None:
                    raise SourceError(f"{path}: tensor {key!r} has dtype {piece.get_dtype()}, not supported")
                tensors[key] = torch.empty(piece.get_shape(), dtype=dtype, device="meta")
            return tensors
    except (safetensors.SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path} is not a readable safetensors file: {exc}") from exc


def module_from_state_dict(tensors: dict[str, torch.Tensor]) -> nn.Module:
    """A module tree whose state dict is ``tensors``: an nn.Linear for every 2-D floating-point
    ``<name>.weight`` (its bias from ``<name>.bias`` when that is a matching vector), buffers for
    everything else."""
    if not tensors:
        raise SourceError("the state dict holds no tensor")
    linears = {}
    for key, tensor in tensors.items():
        owner, _, leaf = key.rpartition(".")
        if leaf == "weight" and owner and tensor.dim() == 2 and tensor.is_floating_point():
            bias = tensors.get(f"{owner}.bias")
            fits = isinstance(bias, torch.Tensor) and tuple(bias.shape) == (tensor.shape[0],)
            linears[owner] = bias if fits else None
    root = nn.Module()
    owners = {key.rpartition(".")[0] for key in tensors}
    names = {
        ".".join(parts[:i]) for parts in (o.split(".") for o in owners if o) for i in range(1, len(parts) + 1)
    }
    for name in sorted(names, key=lambda n: n.count(".")):
        parent_name, _, child = name.rpartition(".")
        parent = _module_at(root, parent_name)
        if name in linears:
            weight = tensors[f"{name}.weight"]
            module = nn.Linear(
                weight.shape[1], weight.shape[0], bias=linears[name] is not None, device="meta"
            )
            module.weight = nn.Parameter(weight, requires_grad=False)
            if linears[name] is not None:
                module.bias = nn.Parameter(linears[name], requires_grad=False)
        else:
            module = nn.Module()
        try:
            parent.add_module(child, module)
        except KeyError as exc:
            raise SourceError(f"state dict name {name!r} cannot be a module name: {exc}") from exc
    for key, tensor in tensors.items():
        owner, _, leaf = key.rpartition(".")
        if owner in linears and (leaf == "weight" or (leaf == "bias" and linears[owner] is not None)):
            continue
        try:
            _module_at(root, owner).register_buffer(leaf, tensor)
        except KeyError as exc:
            raise SourceError(f"state dict name {key!r} cannot be a buffer name: {exc}") from exc
    return root


def _module_at(root: nn.Module, name: str) -> nn.Module:
    return root.get_submodule(name) if name else root


def _is_weight_file(path: Path) -> bool:
    return path.is_file() and path.name.endswith(WEIGHT_SUFFIXES)


def _weight_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.iterdir() if _is_weight_file(item))
