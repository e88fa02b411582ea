"""Tokenizers through the `tokenizers` library, returning padded numpy arrays: WordPiece for DistilBERT,
BERT and ELECTRA (from `vocab.txt` or `tokenizer.json`), and any `tokenizer.json` — byte-level BPE
(RoBERTa), SentencePiece Unigram (XLM-RoBERTa, CamemBERT) — with its own pre-processing, pair template
(`<s> A </s></s> B </s>`) and token types. Ids, offsets and windows equal `transformers`' fast tokenizer's.
Special tokens are named by `tokenizer_config.json` (or `special_tokens_map.json`), else BERT's
`[CLS]`/`[SEP]`/… or RoBERTa's `<s>`/`</s>`/…, whichever set the vocabulary holds."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from .hub import resolve_model_path
from .jsonfile import read_json_object
from .sentence import read_sentence_transformers

SPECIAL_TOKENS = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}  # WordPiece
ROBERTA_SPECIAL_TOKENS = {"unk": "<unk>", "sep": "</s>", "pad": "<pad>", "cls": "<s>", "mask": "<mask>"}  # BPE, Unigram
# transformers tokenizer classes whose models have one token type (they return no token_type_ids): our
# Batch.token_type_ids stay 0 for them, whatever the post-processor's type ids
NO_TOKEN_TYPES = ("RobertaTokenizer", "XLMRobertaTokenizer", "CamembertTokenizer")
_TRUNCATION = ("longest_first", "only_first", "only_second")


@dataclasses.dataclass(frozen=True)
class Batch:
    """A tokenized batch. Arrays are [B, T]; `offsets` [B, T, 2] are character spans into the source
    text (into the second text for tokens with `sequence_ids == 1`); `sequence_ids` is 0 / 1 for tokens of
    the first / second text and -1 for special tokens and padding. With `return_overflowing_tokens`, each
    row is one window of a long input and `overflow_to_sample_mapping` [B] names the input it came from.
    `token_type_ids` are BERT's segment ids: 0 for `[CLS] A [SEP]`, 1 for `B [SEP]` of a pair, 0 for
    padding (DistilBERT ignores them); all 0 for the RoBERTa family, which has one token type."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    offsets: np.ndarray
    sequence_ids: np.ndarray
    overflow_to_sample_mapping: np.ndarray | None = None
    token_type_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def _check_texts(texts, name: str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty: pass at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}: {t!r:.60}")
        problem = _surrogate_problem(t)
        if problem:
            raise ValueError(f"{name}[{i}] {problem}: {t!r:.60}; clean it first, e.g. "
                             "text.encode('utf-8', 'replace').decode('utf-8')")  # fmt: skip
    return list(texts)


def _surrogate_problem(text) -> str | None:
    """What makes `text` unencodable (a lone surrogate), or None."""
    if not isinstance(text, str):
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return (f"holds {text[e.start:e.end]!r} at character {e.start}, a lone surrogate (not valid Unicode; "
                "was the text decoded with errors='surrogateescape'?)")  # fmt: skip
    return None


def encode_batch(backend: tokenizers.Tokenizer, texts: list, pairs: list | None = None, **kwargs) -> list:
    """`backend.encode_batch(texts | zip(texts, pairs), **kwargs)`; when it fails, find the failing item
    and raise a `ValueError` naming it (`texts[i]`, `text_pair[i]`) and the problem, not the library's
    internal message alone."""
    inputs = texts if pairs is None else list(zip(texts, pairs))
    try:
        return backend.encode_batch(inputs, **kwargs)
    except Exception as batch_error:  # tokenizers raises bare Exceptions with its internal messages
        for i, item in enumerate(inputs):
            try:
                backend.encode_batch([item], **kwargs)
            except Exception as e:
                what = f"texts[{i}] {texts[i]!r:.60}" + ("" if pairs is None else f" with text_pair[{i}] {pairs[i]!r:.60}")
                problem = _surrogate_problem(texts[i]) or (pairs and _surrogate_problem(pairs[i]))
                hint = ""
                if "Truncation error" in str(e) and pairs is not None:
                    hint = "; with truncation='only_second' / 'only_first' the other text alone must fit max_length"
                raise ValueError(f"tokenizing {what} failed: {problem or e}{hint}") from None
        raise ValueError(f"tokenization of {len(inputs)} items failed: {batch_error}") from None


def _bert_backend(vocab_path: str, lowercase: bool, strip_accents: bool | None) -> tokenizers.Tokenizer:
    vocab: dict[str, int] = {}
    with open(vocab_path, encoding="utf-8") as f:
        for line in f:
            token = line.rstrip("\n")
            if token and token not in vocab:
                vocab[token] = len(vocab)
    if not vocab:
        raise ValueError(f"{vocab_path} is empty: a WordPiece vocab.txt has one token per line")
    missing = [t for t in SPECIAL_TOKENS.values() if t not in vocab]
    if missing:
        raise ValueError(f"{vocab_path} lacks the special tokens {missing}")
    tok = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(list(SPECIAL_TOKENS.values()))
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _token_name(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": …} (older files)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(vocab: dict[str, int], named: dict[str, str | None]) -> dict[str, str]:
    """{"unk"|"sep"|"pad"|"cls"|"mask": token}: the `named` ones, the rest from BERT's or RoBERTa's set,
    whichever the vocabulary holds. ValueError naming what is missing."""
    candidates = [dict(defaults, **{k: v for k, v in named.items() if v}) for defaults in (SPECIAL_TOKENS, ROBERTA_SPECIAL_TOKENS)]
    for tokens in candidates:
        if all(t in vocab for t in tokens.values()):
            return tokens
    missing = [sorted(t for t in tokens.values() if t not in vocab) for tokens in candidates]
    raise ValueError(f"tokenizer vocabulary lacks the special tokens {missing[0]} (BERT-style) or {missing[1]} "
                     "(RoBERTa-style); name them in tokenizer_config.json (cls_token, sep_token, …)")  # fmt: skip


class Tokenizer:
    """A WordPiece / BPE / Unigram tokenizer. `tok(texts, max_length=128)` → `Batch` of padded numpy arrays.
    `special_tokens` {"unk", "sep", "pad", "cls", "mask": token} default to BERT's or RoBERTa's names;
    `tokenizer_class` (the transformers class written back by `save_pretrained`) defaults to
    DistilBertTokenizer, or for RoBERTa-style special tokens to RobertaTokenizer (BPE) / XLMRobertaTokenizer."""

    def __init__(self, backend: tokenizers.Tokenizer, model_max_length: int = 512, lowercase: bool = True,
                 tokenizer_class: str | None = None, special_tokens: dict[str, str | None] | None = None):  # fmt: skip
        self.backend = backend
        self._truncation_lock = threading.Lock()
        self.model_max_length = int(model_max_length)
        self.lowercase = lowercase
        backend.no_padding()
        backend.no_truncation()
        vocab = backend.get_vocab()
        self.special_tokens = _special_tokens(vocab, special_tokens or {})
        if tokenizer_class is None:
            roberta_style = self.special_tokens["cls"] == ROBERTA_SPECIAL_TOKENS["cls"]
            bpe = isinstance(backend.model, models.BPE)
            tokenizer_class = ("RobertaTokenizer" if bpe else "XLMRobertaTokenizer") if roberta_style else "DistilBertTokenizer"
        self.tokenizer_class = tokenizer_class  # written back by save_pretrained
        self.unk_token_id, self.sep_token_id, self.pad_token_id, self.cls_token_id, self.mask_token_id = (
            vocab[self.special_tokens[k]] for k in SPECIAL_TOKENS
        )

    def __getstate__(self) -> dict:  # picklable (a lock is not)
        return {k: v for k, v in self.__dict__.items() if k != "_truncation_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._truncation_lock = threading.Lock()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_vocab(cls, vocab_path: str | os.PathLike, lowercase: bool = True,
                   strip_accents: bool | None = None, model_max_length: int = 512) -> "Tokenizer":  # fmt: skip
        """BertTokenizer rules from a `vocab.txt` (accents stripped when lower-casing, unless told)."""
        backend = _bert_backend(os.fspath(vocab_path), lowercase, strip_accents)
        return cls(backend, model_max_length, lowercase)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None) -> "Tokenizer":  # fmt: skip
        """Load from an HF directory: `tokenizer.json` if present, else `vocab.txt` (+ `tokenizer_config.json`).
        A sentence-transformers directory's tokenizer is its transformer's, limited to its `max_seq_length`.
        `path` may be a Hub model id in the local Hugging Face cache (see `distilbert_jax.from_pretrained`)."""
        path = resolve_model_path(path, revision, cache_dir)
        sentence = read_sentence_transformers(path)
        if sentence is None:
            return cls._from_hf_dir(path)
        tok = cls._from_hf_dir(sentence.transformer_path)
        if sentence.max_seq_length:
            tok.model_max_length = sentence.max_seq_length
        return tok

    @classmethod
    def _from_hf_dir(cls, path: str) -> "Tokenizer":
        cfg: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the second wins
            if os.path.isfile(os.path.join(path, name)):
                cfg.update(read_json_object(os.path.join(path, name)))
        named = {k: _token_name(cfg.get(f"{k}_token")) for k in SPECIAL_TOKENS}
        max_len = cfg.get("model_max_length", 512)
        if not isinstance(max_len, int) or max_len > 1_000_000:  # HF writes 1e30 for "unset"
            max_len = 512
        lowercase = bool(cfg.get("do_lower_case", True))
        tokenizer_class = str(cfg["tokenizer_class"]).removesuffix("Fast") if cfg.get("tokenizer_class") else None
        json_path, vocab_path = os.path.join(path, "tokenizer.json"), os.path.join(path, "vocab.txt")
        if os.path.isfile(json_path):
            try:
                backend = tokenizers.Tokenizer.from_file(json_path)
            except Exception as e:  # tokenizers raises a bare Exception on bad JSON
                raise ValueError(f"{json_path} is not a valid tokenizers file: {e}") from None
            try:
                return cls(backend, max_len, lowercase, tokenizer_class, named)
            except ValueError as e:
                raise ValueError(f"{json_path}: {e}") from None
        if os.path.isfile(vocab_path):
            tok = cls.from_vocab(vocab_path, lowercase, cfg.get("strip_accents"), max_len)
            tok.tokenizer_class = tokenizer_class or tok.tokenizer_class
            return tok
        raise FileNotFoundError(f"{path} has neither tokenizer.json nor vocab.txt")

    # ---- encoding -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def is_word_piece(self) -> bool:
        """Whether the vocabulary is WordPiece (BERT, DistilBERT, ELECTRA), not BPE / Unigram."""
        return isinstance(self.backend.model, models.WordPiece)

    @property
    def has_token_types(self) -> bool:
        """Whether `Batch.token_type_ids` carry the pair's segments (0 / 1); all 0 for the RoBERTa family."""
        return self.tokenizer_class not in NO_TOKEN_TYPES

    @property
    def all_special_ids(self) -> list[int]:
        return [self.cls_token_id, self.sep_token_id, self.pad_token_id, self.mask_token_id, self.unk_token_id]

    def __call__(
        self,
        texts: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        padding: str = "longest",
        truncation: bool | str = True,
        pad_to_multiple_of: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
    ) -> Batch:
        """Tokenize texts (or text pairs, e.g. question + context) into padded [B, T] arrays.

        padding: "longest" (to the longest in the batch) or "max_length". truncation: True
        ("longest_first"), "only_first", "only_second" or False (then a too-long text is an error).
        `return_overflowing_tokens=True` keeps what truncation cuts off as further rows (windows), each
        overlapping the previous one by `stride` tokens, with `overflow_to_sample_mapping` [rows] giving
        each row's input — the same rows as `transformers`' fast tokenizer (e.g. question + long context
        with `truncation="only_second"`)."""
        texts = _check_texts(texts, "texts")
        pairs = None if text_pair is None else _check_texts(text_pair, "text_pair")
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"texts has {len(texts)} items but text_pair has {len(pairs)}")
        limit = self.model_max_length if max_length is None else int(max_length)
        if not 2 <= limit <= self.model_max_length:
            raise ValueError(f"max_length must be in [2, {self.model_max_length}] (model_max_length), got {limit}")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        strategy = "longest_first" if truncation is True else truncation
        if strategy is not False and strategy not in _TRUNCATION:
            raise ValueError(f"truncation must be True, False or one of {_TRUNCATION}, got {truncation!r}")

        if stride < 0 or (stride and not (strategy and return_overflowing_tokens)):
            raise ValueError(f"stride must be >= 0 and needs truncation and return_overflowing_tokens=True, "
                             f"got stride={stride}")  # fmt: skip
        with self._truncation_lock:  # truncation is backend state: one call at a time (loader threads)
            if strategy:
                self.backend.enable_truncation(limit, stride=stride, strategy=strategy)
            try:
                encodings = encode_batch(self.backend, texts, pairs)
            finally:
                self.backend.no_truncation()
        sample_mapping = None
        if return_overflowing_tokens:
            windows = [[e, *e.overflowing] for e in encodings]
            sample_mapping = np.repeat(np.arange(len(windows)), [len(w) for w in windows]).astype(np.int32)
            encodings = [w for per_input in windows for w in per_input]

        lengths = [len(e.ids) for e in encodings]
        if not strategy and max(lengths) > limit:
            i = int(np.argmax(lengths))
            raise ValueError(f"texts[{i}] is {lengths[i]} tokens, longer than max_length={limit}; allow truncation")
        width = limit if padding == "max_length" else max(lengths)
        if pad_to_multiple_of:
            width = min(-(-width // pad_to_multiple_of) * pad_to_multiple_of, max(limit, width))
        n = len(encodings)
        ids = np.full((n, width), self.pad_token_id, np.int32)
        mask = np.zeros((n, width), np.int32)
        offsets = np.zeros((n, width, 2), np.int32)
        seq_ids = np.full((n, width), -1, np.int32)
        type_ids = np.zeros((n, width), np.int32)
        for row, enc in enumerate(encodings):
            k = len(enc.ids)
            ids[row, :k] = enc.ids
            mask[row, :k] = 1
            offsets[row, :k] = enc.offsets
            seq_ids[row, :k] = [-1 if s is None else s for s in enc.sequence_ids]
            if self.has_token_types:
                type_ids[row, :k] = enc.type_ids
        return Batch(ids, mask, offsets, seq_ids, sample_mapping, type_ids)

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = True) -> str:
        """Token ids back to text (WordPiece `##` pieces joined)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # ---- saving ---------------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike, tokenizer_class: str | None = None) -> None:
        """Write `tokenizer.json` and `tokenizer_config.json` (and, for WordPiece, `vocab.txt`), loadable by
        `transformers`; `tokenizer_class` (default: the one loaded, else DistilBertTokenizer) names the HF
        class, e.g. BertTokenizer, whose inputs include token_type_ids, or XLMRobertaTokenizer."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        self.backend.save(os.path.join(path, "tokenizer.json"))
        word_piece = self.is_word_piece
        if word_piece:
            vocab = sorted(self.backend.get_vocab().items(), key=lambda kv: kv[1])
            with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
                f.writelines(token + "\n" for token, _ in vocab)
        tokens = {f"{k}_token": v for k, v in self.special_tokens.items()}
        if not word_piece:  # RoBERTa-style: <s> / </s> also begin / end a sequence
            tokens.update(bos_token=self.special_tokens["cls"], eos_token=self.special_tokens["sep"])
        config = {
            "tokenizer_class": tokenizer_class or self.tokenizer_class,
            **({"do_lower_case": self.lowercase} if word_piece else {}),
            "model_max_length": self.model_max_length,
            **tokens,
        }
        with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
