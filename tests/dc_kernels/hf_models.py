"""Tiny Hugging Face models built from configs (nothing downloaded): BERT, Llama and OPT, and a
sentence-transformers model over a tiny BERT with a word-level tokenizer written locally."""

import copy
from pathlib import Path

import torch
import transformers

# kind -> (model class, config)
ARCHITECTURES = {
    "bert": (
        transformers.BertModel,
        transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64,
        ),
    ),
    "llama": (
        transformers.LlamaForCausalLM,
        transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64,
        ),
    ),
    "opt": (
        transformers.OPTForCausalLM,
        transformers.OPTConfig(
            vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, word_embed_proj_dim=32,
        ),
    ),
}  # fmt: skip
WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *["the", "a", "cat", "dog", "sat", "on", "mat", "compressed", "models", "are", "small"],
]


def build(kind: str, seed: int = 0) -> torch.nn.Module:
    model_class, config = ARCHITECTURES[kind]
    torch.manual_seed(seed)
    # A copy: a model keeps its config object, and a compressed one records itself there.
    return model_class(copy.deepcopy(config)).eval()


def inputs(kind: str) -> torch.Tensor:
    return torch.randint(
        0, ARCHITECTURES[kind][1].vocab_size, (2, 9), generator=torch.Generator().manual_seed(1)
    )


def outputs(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    result = model(x)
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


def sentence_model(folder: Path):
    """A SentenceTransformer (tiny BERT + mean pooling) whose files are in ``folder``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(folder)
    word = Transformer(str(folder))
    return SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension())], device="cpu").eval()
