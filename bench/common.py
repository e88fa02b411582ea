"""Shared pieces of the benchmarks and parity checks: reference `transformers` models, sizes, timing."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from distilbert_jax.gemm import DTYPES as GEMM_DTYPES
from distilbert_jax.gemm import choose, configure_cpu
from distilbert_jax.hardware import cpu_description, device_description  # noqa: F401 (re-exported for the benchmarks)
from distilbert_jax.tables import format_table

# `transformers` config kwargs for the two standard sizes.
SIZES = {
    "small": dict(vocab_size=1000, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=128),
    "big": dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512),
}

# `transformers.BertConfig` kwargs for the BERT sizes ("big" = bert-base: 12 × 768, 110M parameters)
BERT_SIZES = {
    "small": dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  max_position_embeddings=128, type_vocab_size=2),
    "big": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
}  # fmt: skip
_ROBERTA = dict(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
# `transformers` config kwargs per BERT-style arch; "big" is the arch's base checkpoint (roberta-base,
# xlm-roberta-base with its 250k vocabulary, camembert-base, electra-base-discriminator). The small ELECTRA
# has embedding_size 16 != hidden 32, so the embedding projection runs (the base discriminator has none).
ARCH_SIZES = {
    "distilbert": SIZES,
    "bert": BERT_SIZES,
    **{arch: {"small": dict(BERT_SIZES["small"], max_position_embeddings=130, vocab_size=1000, **_ROBERTA),
              "big": dict(BERT_SIZES["big"], max_position_embeddings=514, vocab_size=vocab, **_ROBERTA)}
       for arch, vocab in (("roberta", 50265), ("xlm-roberta", 250002), ("camembert", 32005))},
    "electra": {"small": dict(BERT_SIZES["small"], embedding_size=16), "big": dict(BERT_SIZES["big"], embedding_size=768)},
}  # fmt: skip
ARCHS = tuple(ARCH_SIZES)

# our head name -> transformers class name
HF_CLASSES = {
    "base": "DistilBertModel",
    "masked_lm": "DistilBertForMaskedLM",
    "sequence_classification": "DistilBertForSequenceClassification",
    "token_classification": "DistilBertForTokenClassification",
    "question_answering": "DistilBertForQuestionAnswering",
    "multiple_choice": "DistilBertForMultipleChoice",
}


def hf_class_name(head: str, arch: str = "distilbert") -> str:
    """The `transformers` class of `head` for `arch` (a model_type in `ARCHS`)."""
    from distilbert_jax.heads import FAMILY_HEADS
    from distilbert_jax.config import CLASS_PREFIXES

    if head in FAMILY_HEADS:
        return FAMILY_HEADS[head][1]
    return CLASS_PREFIXES[arch] + HF_CLASSES[head][len("DistilBert"):]


def arch_heads(arch: str) -> list[str]:
    """The heads `arch` has (ours and transformers')."""
    from distilbert_jax.config import FAMILIES
    from distilbert_jax.heads import heads_of

    return heads_of(FAMILIES[arch])


def max_seq_len(arch: str, size: str) -> int:
    """The longest input of `arch` at `size` (the RoBERTa family spends pad_token_id + 1 positions)."""
    from distilbert_jax.config import DistilBertConfig

    sizes = ARCH_SIZES[arch][size]
    if arch == "distilbert":
        return sizes["max_position_embeddings"]
    return DistilBertConfig.from_hf(dict(sizes, model_type=arch)).max_seq_len


def hf_model(head: str, size: str | dict = "small", seed: int = 0, randomize: bool = True, arch: str = "distilbert",
             **config_kw):  # fmt: skip
    """A seeded random-init `transformers` model of `arch` (a model_type in `ARCHS`) for `head`, in eval
    mode with eager attention. With `randomize`, every param (LayerNorm included) gets extra noise so no
    weight is trivially 1 or 0."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar per save
    kwargs = dict(ARCH_SIZES[arch][size] if isinstance(size, str) else size)
    kwargs.update(config_kw)
    kwargs.setdefault("num_labels", 3 if head in ("sequence_classification", "token_classification") else 2)
    config = transformers.AutoConfig.for_model(arch, **kwargs)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, hf_class_name(head, arch))(config).eval()
    if randomize:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "position_embeddings" in name and getattr(config, "sinusoidal_pos_embds", False):
                    continue
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def random_inputs(batch: int, seq_len: int, vocab_size: int, seed: int = 0, choices: int | None = None,
                  pad_id: int = 0):  # fmt: skip
    """Padded random token ids (padding `pad_id`) and a mask: row i keeps a different length (row 0 full,
    others shorter)."""
    rng = np.random.default_rng(seed)
    shape = (batch, seq_len) if choices is None else (batch, choices, seq_len)
    ids = rng.integers(5, vocab_size, size=shape).astype(np.int64)
    flat_ids = ids.reshape(-1, seq_len)
    mask = np.ones_like(flat_ids)
    for i in range(1, len(flat_ids)):
        keep = max(1, seq_len - int(rng.integers(1, max(2, seq_len // 2))))
        mask[i, keep:] = 0
        flat_ids[i, keep:] = pad_id
    flat_ids[:, 0] = 2  # a [CLS]-like first token
    return ids, mask.reshape(shape)


def random_token_types(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """Segment ids for a padded mask [..., T]: 0 up to a random split, 1 from there to the last real
    token, 0 on padding (as a tokenized text pair)."""
    rng = np.random.default_rng(seed + 7)
    flat = mask.reshape(-1, mask.shape[-1])
    types = np.zeros_like(flat)
    for i, row in enumerate(flat):
        length = int(row.sum())
        split = int(rng.integers(1, length)) if length > 1 else length
        types[i, split:length] = 1
    return types.reshape(mask.shape)


def median_ms(fn: Callable[[], object], repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of `fn()` in ms; `fn` must block until its result is ready."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def configure_gemm(dtype: str = "fp32", backend: str | None = None) -> str:
    """Apply the GEMM back end for `dtype` (or `backend`) to this process's XLA (call before any JAX computation;
    every benchmark process does) and describe it, for the report."""
    return configure_cpu(dtype, backend).describe()


def gemm_report() -> str:
    """The GEMM back end each dtype's benchmark processes use, and why (for the line beside the CPU)."""
    choices = {d: choose(d) for d in GEMM_DTYPES}
    if len(set(choices.values())) == 1:
        c = choices[GEMM_DTYPES[0]]
        return f"GEMM back end {c.backend} for {' and '.join(GEMM_DTYPES)} ({c.source}: {c.reason})"
    return "GEMM back end " + ", ".join(f"{d} {c.backend} ({c.source}: {c.reason})" for d, c in choices.items())


def torch_reference(title: str) -> tuple[object, str]:
    """Import torch with one thread per core and print `title` with the versions and the device on
    stderr; returns (torch module, device description)."""
    import sys

    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    device = device_description()
    print(f"{title}: JAX {jax.__version__} on {device} vs transformers {transformers.__version__} / torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads)", file=sys.stderr)  # fmt: skip
    return torch, device


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print rows as an aligned text table."""
    print(format_table(rows, columns))
