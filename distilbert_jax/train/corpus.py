"""Training data from the `loaders` package: the default offline corpus (stdlib docstrings) or
text / JSONL / CSV files, tokenized with a given or freshly trained WordPiece tokenizer."""

from __future__ import annotations

import os

import jax

import distilbert_jax as dj

from .config import ConfigError, TrainConfig
from .data import DataSetup


def _datasets(cfg: TrainConfig):
    import loaders

    d, task = cfg.data, cfg.base_task
    if task == "qa" and d.source == "default":
        raise ConfigError("the default corpus has no question-answering data: set data.source to a SQuAD-style "
                          "JSONL file (data.question_field, data.text_field = the context, data.answers_field) "
                          "or to 'synthetic'")  # fmt: skip
    if d.source == "default":
        corpus = loaders.default_corpus()
        kind = {"mlm": "pretrain", "classify": "classification", "token-classify": "token_classification"}[task]
        train, valid = getattr(corpus, kind)("train"), getattr(corpus, kind)("valid")
        return train, valid, corpus.path("pretrain", "train"), os.path.join(corpus.root, "token_cache")
    paths = {"train": d.source, "eval": d.eval_source or d.source}
    for name, path in paths.items():
        if not os.path.isfile(path):
            raise ConfigError(f"data.{'source' if name == 'train' else 'eval_source'} {path!r} is not 'default', "
                              "'synthetic' or an existing file")  # fmt: skip
    kw = {"text_field": d.text_field}
    if task == "classify":
        kw["label_field"] = d.label_field
    elif task == "token-classify":
        kw.update(tokens_field="tokens", tags_field="tags")
    elif task == "qa":
        kw.update(question_field=d.question_field, answers_field=d.answers_field)
    train = loaders.TextDataset.from_files(paths["train"], **kw)
    if task in ("classify", "token-classify"):
        kw["label_names"] = train.label_names  # the same label ids in both splits
    valid = loaders.TextDataset.from_files(paths["eval"], **kw)
    # a tokenizer is trained on the texts (contexts for QA; the words of token data)
    return train, valid, train, None


def loader_sources(cfg: TrainConfig) -> DataSetup:
    """The `DataSetup` of a config whose `data.source` is "default" or a file path."""
    import loaders

    d, task = cfg.data, cfg.base_task
    train_ds, valid_ds, tokenizer_text, cache_dir = _datasets(cfg)
    if cfg.tokenizer:
        tokenizer = dj.Tokenizer.from_pretrained(cfg.tokenizer)
    elif d.source == "default":
        tokenizer = loaders.default_corpus().tokenizer(d.vocab_size)
    else:
        source = [tokenizer_text] if isinstance(tokenizer_text, str) else tokenizer_text
        tokenizer = loaders.build_tokenizer(source, os.path.join(cfg.out_dir, "tokenizer"), vocab_size=d.vocab_size)
    builder = {"mlm": loaders.mlm_batches, "classify": loaders.classification_batches,
               "token-classify": loaders.token_classification_batches, "qa": loaders.qa_batches}[task]  # fmt: skip
    common = dict(batch_size=d.batch_size, seq_len=d.seq_len, process_index=jax.process_index(),
                  process_count=jax.process_count())  # fmt: skip
    if task == "mlm":
        common["mask_prob"] = d.mask_prob
        extra = {"cache_dir": cache_dir}
    elif task == "qa":
        extra = {"stride": d.qa_stride}  # every window of a long context is a row, as run_qa
    else:
        extra = {}
    train = builder(train_ds, tokenizer, seed=cfg.seed, shuffle=d.shuffle, epochs=None, **common, **extra)

    def make_eval():
        # every validation example counts: the last batch is padded with rows whose labels are -100
        return builder(valid_ds, tokenizer, seed=cfg.seed, shuffle=False, epochs=1, drop_last=False, **common, **extra)

    num_labels = None if task in ("mlm", "qa") else train.num_labels
    names = getattr(train, "label_names", None)
    return DataSetup(tokenizer, tokenizer.vocab_size, num_labels, train, make_eval, None if names is None else tuple(names))
