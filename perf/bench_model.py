"""Whole-model CPU benchmark: a small transformer encoder, dense against each compressed form.

    python -m perf.bench_model [--densities 0.5 0.8] [--bits 4] [--batches 1 32] [--seq-len 32]

The model is built from a config in plain PyTorch (no download, no optional package): a
MiniLM-shaped encoder (`EncoderConfig`: 6 layers, hidden 384, 12 heads, intermediate 1536,
post-norm as in BERT), randomly initialised with a fixed seed. Its 36 nn.Linear layers (query,
key, value, output, up and down projections) are compressed one shot with ``dc_kernels.compress_``
(magnitude pruning to each density, k-means to ``--bits``-bit codes) with the layer form forced
to ``"sparse"``, forced to ``"dense_codes"``, or ``"auto"`` (the smaller in memory per layer),
and each compressed model is timed against the dense float32 model, interleaved in rounds
(medians), at each batch of ``--seq-len``-token sequences (a batch of B sequences runs every
Linear on B * seq_len rows).

Reported per model: bytes of the whole model in memory and of its Linear layers alone (against
the dense float32 model's), median latency per batch and speed against dense, the forms the
layers run in, and the cosine of the outputs against the dense model (the compression's error,
not the kernels': random weights, no retraining). Writes ``bench_model.csv`` and
``bench_model.png`` to ``--out``; the load average before and after goes into every row (the
machine's cores may be shared).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import dc_kernels
from compress import DeepCompressionConfig
from dc_kernels.linear import CompressedLinear
from dc_kernels.sizes import memory_bytes
from perf.harness import REPO_ROOT, doc_summary, machine_info, print_table, time_interleaved, write_csv

FORMS = ("sparse", "dense_codes", "auto")


@dataclass(frozen=True)
class EncoderConfig:
    """The shape of the encoder (defaults: all-MiniLM-L6-v2's)."""

    layers: int = 6
    hidden: int = 384
    heads: int = 12
    intermediate: int = 1536
    vocab: int = 30522
    max_positions: int = 512


class EncoderLayer(nn.Module):
    """Self-attention and a GELU feed-forward block, each followed by residual + LayerNorm."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        h = config.hidden
        self.heads = config.heads
        self.query, self.key, self.value, self.output = (nn.Linear(h, h) for _ in range(4))
        self.attention_norm = nn.LayerNorm(h)
        self.up = nn.Linear(h, config.intermediate)
        self.down = nn.Linear(config.intermediate, h)
        self.output_norm = nn.LayerNorm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, hidden)
        x = self.attention_norm(x + self.output(attended))
        return self.output_norm(x + self.down(F.gelu(self.up(x))))


class Encoder(nn.Module):
    """Token and position embeddings, then `EncoderLayer` s; returns the token states."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(config.vocab, config.hidden)
        self.positions = nn.Embedding(config.max_positions, config.hidden)
        self.norm = nn.LayerNorm(config.hidden)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.tokens(ids) + self.positions(torch.arange(ids.shape[1])))
        for layer in self.layers:
            x = layer(x)
        return x


def build_encoder(config: EncoderConfig, seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(config).eval()


def linear_bytes(model: nn.Module) -> int:
    """Bytes of the model's (compressed or dense) Linear layers in memory."""
    total = 0
    for module in model.modules():
        if isinstance(module, CompressedLinear):
            total += module.memory_bytes()
        elif isinstance(module, nn.Linear):
            total += sum(p.numel() * p.element_size() for p in module.parameters())
    return total


def compressed_copy(model: nn.Module, density: float, bits: int, form: str) -> nn.Module:
    copied = copy.deepcopy(model)
    dc_kernels.compress_(copied, DeepCompressionConfig(density=density, bits=bits, form=form))
    return copied


def forms_used(model: nn.Module) -> str:
    counts = Counter(m.effective_form for m in model.modules() if isinstance(m, CompressedLinear))
    return " ".join(f"{form}:{n}" for form, n in sorted(counts.items()))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(1), b.flatten(1)).mean())


def run(args) -> list[dict]:
    config = EncoderConfig()
    dense = build_encoder(config)
    dense_linear = linear_bytes(dense)
    dense_total = memory_bytes(dense)
    rows = []
    for density in args.densities:
        models = {"dense": dense}
        for form in FORMS:
            print(f"compressing: density {density}, {args.bits}-bit, form {form}", file=sys.stderr)
            models[form] = compressed_copy(dense, density, args.bits, form)
        for batch in args.batches:
            ids = torch.randint(
                0, config.vocab, (batch, args.seq_len), generator=torch.Generator().manual_seed(batch)
            )
            fns = {name: (lambda m=m, ids=ids: m(ids)) for name, m in models.items()}
            load_before = os.getloadavg()[0]
            with torch.no_grad():
                reference = dense(ids)
                fidelity = {name: cosine(m(ids), reference) for name, m in models.items()}
                times = {
                    k: t.median
                    for k, t in time_interleaved(fns, rounds=args.rounds, repeat=args.repeat).items()
                }
            load_after = os.getloadavg()[0]
            for name, model in models.items():
                row = {
                    "model": name,
                    "density": density if name != "dense" else 1.0,
                    "bits": args.bits if name != "dense" else 32,
                    "batch": batch,
                    "seq_len": args.seq_len,
                    "threads": torch.get_num_threads(),
                    "latency_ms": times[name] * 1e3,
                    "speed_vs_dense": times["dense"] / times[name],
                    "model_MB": memory_bytes(model) / 1e6,
                    "linear_MB": linear_bytes(model) / 1e6,
                    "linear_bytes_vs_dense": linear_bytes(model) / dense_linear,
                    "model_bytes_vs_dense": memory_bytes(model) / dense_total,
                    "forms": forms_used(model) or "dense",
                    "cosine_vs_dense": fidelity[name],
                    "load_avg_before": f"{load_before:.2f}",
                    "load_avg_after": f"{load_after:.2f}",
                }
                rows.append(row)
                print_table([row], COLUMNS, file=sys.stderr)
    return rows


COLUMNS = (
    "model", "density", "batch", "latency_ms", "speed_vs_dense", "model_MB", "linear_MB",
    "linear_bytes_vs_dense", "forms", "cosine_vs_dense", "load_avg_before",
)  # fmt: skip


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    densities = sorted({r["density"] for r in rows if r["model"] != "dense"})
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(FORMS)
    groups = [(d, b) for d in densities for b in batches]
    for i, form in enumerate(FORMS):
        speeds = [
            next(
                r["speed_vs_dense"]
                for r in rows
                if r["model"] == form and r["density"] == d and r["batch"] == b
            )
            for d, b in groups
        ]
        axes[0].bar([k + (i - 1) * width for k in range(len(groups))], speeds, width, label=form)
        sizes = [
            next(r["linear_bytes_vs_dense"] for r in rows if r["model"] == form and r["density"] == d)
            for d in densities
        ]
        axes[1].bar([k + (i - 1) * width for k in range(len(densities))], sizes, width, label=form)
    axes[0].axhline(1.0, color="gray", lw=0.8)
    axes[0].set_xticks(range(len(groups)), [f"density {d}\nbatch {b}" for d, b in groups], fontsize=8)
    axes[0].set_ylabel("speed vs dense float32 model (x)")
    axes[0].set_title(f"encode latency, {rows[0]['seq_len']} tokens per sequence")
    axes[1].axhline(1 / 6, color="gray", lw=0.8, ls=":", label="1/6")
    axes[1].set_xticks(range(len(densities)), [f"density {d}" for d in densities])
    axes[1].set_ylabel("Linear bytes / dense float32")
    axes[1].set_title("Linear layers in memory")
    for ax in axes:
        ax.legend()
    bits = next(r["bits"] for r in rows if r["model"] != "dense")
    fig.suptitle(f"MiniLM-shaped encoder (plain torch), {bits}-bit codes, {rows[0]['threads']} thread(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=doc_summary(__doc__))
    parser.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median over rounds)")
    parser.add_argument("--repeat", type=int, default=3, help="calls per round")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "perf" / "results" / "model")
    args = parser.parse_args(argv)
    if not all(math.isfinite(d) and 0 < d <= 1 for d in args.densities):
        parser.error(f"--densities must be in (0, 1], got {args.densities}")
    if args.seq_len < 1 or args.seq_len > EncoderConfig().max_positions or min(args.batches) < 1:
        parser.error("--seq-len must be in 1..512 and --batches >= 1")
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info("cpu")
    try:
        rows = run(args)
    finally:
        torch.set_num_threads(threads)
    csv_path = write_csv(args.out / "bench_model.csv", rows, info)
    plot(rows, args.out / "bench_model.png")
    print_table(rows, COLUMNS)
    print(f"\nconditions: {info['cpu']}, torch {info['torch']}, CSV: {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
