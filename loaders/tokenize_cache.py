"""The token stream of a text dataset — each document's ids followed by [SEP] — either cached on disk
as a memory-mapped numpy array (rebuilt when the source files or the tokenizer change) or streamed:
re-tokenized on demand from the source file, holding only per-document offsets (8 bytes/document)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from distilbert_jax.atomicfile import file_sha256
from distilbert_jax.faults import kill_point
from distilbert_jax.tokenizer import encode_batch

from .datasets import TextDataset

CACHE_VERSION = 2  # 2: meta.json records each file's SHA-256, checked on every load
CACHE_FILES = ("tokens.bin", "doc_lengths.npy")
CHUNK_DOCS = 1024  # documents per `encode_batch` call


def tokenizer_fingerprint(tok) -> str:
    """Hash of the tokenizer's full definition (vocab, normalizer, pre-tokenizer, ...)."""
    return hashlib.sha256(tok.backend.to_str().encode()).hexdigest()


def encode_texts(tok, texts: list[str]) -> list[list[int]]:
    """Raw WordPiece ids (no special tokens, no truncation) of each text, batched in Rust."""
    return [e.ids for e in encode_batch(tok.backend, texts, add_special_tokens=False)] if texts else []


class TokenStore:
    """Token stream of `dataset` (documents in file order, each followed by [SEP]).

    `doc_offsets` [D+1] int64: document d is stream[doc_offsets[d]:doc_offsets[d+1]].
    `spans([(start, stop), ...])` → list of int32 arrays. With `cache_dir`, tokens live in
    `cache_dir/<dataset+tokenizer key>/tokens.bin` (memory-mapped; `rebuilt` tells whether this call
    tokenized); without, one counting pass runs now and spans are tokenized on demand."""

    def __init__(self, dataset: TextDataset, tok, cache_dir: str | os.PathLike | None = None):
        if dataset.kind != "text":
            raise ValueError(f"a token stream needs a plain text dataset, got a {dataset.kind} dataset")
        self.dataset, self.tok = dataset, tok
        self.sep = tok.sep_token_id
        self.dtype = np.uint16 if tok.vocab_size <= 65536 else np.int32
        self.rebuilt = False
        self.path = None if cache_dir is None else self._cache_path(os.fspath(cache_dir))
        self._lock = threading.Lock()
        self._docs: OrderedDict[int, np.ndarray] = OrderedDict()  # LRU of streamed documents
        self.tokens: np.ndarray | None = None  # [num_tokens] memmap when cached
        if self.path is None:
            lengths = self._tokenize_all(None)
        else:
            lengths = self._load_or_build()
        self.doc_offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        if self.path is not None and self.num_tokens:
            self.tokens = np.memmap(os.path.join(self.path, "tokens.bin"), self.dtype, "r", shape=(self.num_tokens,))

    @property
    def num_tokens(self) -> int:
        return int(self.doc_offsets[-1])

    @property
    def cached(self) -> bool:
        return self.path is not None

    # ---- building -------------------------------------------------------------------------------
    def _cache_path(self, cache_dir: str) -> str:
        ident = json.dumps([[os.path.abspath(p) for p in self.dataset.paths], self.dataset.options], sort_keys=True)
        return os.path.join(cache_dir, "tokens-" + hashlib.sha256(ident.encode()).hexdigest()[:16])

    def _fingerprint(self) -> dict:
        return {"version": CACHE_VERSION, "dataset": self.dataset.fingerprint(),
                "tokenizer": tokenizer_fingerprint(self.tok), "dtype": np.dtype(self.dtype).name}  # fmt: skip

    def _load_or_build(self) -> np.ndarray:
        want = self._fingerprint()
        lengths = self._load(want)
        if lengths is not None:
            return lengths
        _remove_dead_builds(self.path)
        tmp = f"{self.path}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        with open(os.path.join(tmp, "tokens.bin"), "wb") as out:
            lengths = self._tokenize_all(out)
        np.save(os.path.join(tmp, "doc_lengths.npy"), lengths)
        sums = {name: file_sha256(os.path.join(tmp, name)) for name in CACHE_FILES}
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump({"fingerprint": want, "sha256": sums, "files": self.dataset.paths, "documents": len(lengths)},
                      f, indent=1)  # fmt: skip
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(tmp, self.path)  # the cache appears whole, or not at all
        self.rebuilt = True
        return lengths

    def _load(self, want: dict) -> np.ndarray | None:
        """The cached document lengths if the cache is for `want` and every file is whole (its SHA-256 as
        recorded); None to rebuild — with a warning naming the file when the cache is damaged or truncated."""
        meta_path = os.path.join(self.path, "meta.json")
        if not os.path.isfile(meta_path):
            return None
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("fingerprint") != want:
                return None  # another dataset version or tokenizer: rebuilt silently
            for name in CACHE_FILES:
                if file_sha256(os.path.join(self.path, name)) != meta["sha256"][name]:
                    raise ValueError(f"{os.path.join(self.path, name)} does not match its recorded SHA-256 "
                                     "(truncated or damaged)")  # fmt: skip
            return np.load(os.path.join(self.path, "doc_lengths.npy"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            warnings.warn(f"token cache {self.path} cannot be trusted, rebuilding it: {type(e).__name__}: {e}",
                          stacklevel=3)  # fmt: skip
            return None

    def _tokenize_all(self, out) -> np.ndarray:
        """One pass over the dataset in chunks; writes the stream to `out` if given. → [D] lengths."""
        n = len(self.dataset)
        lengths = np.empty(n, np.int64)
        for lo in range(0, n, CHUNK_DOCS):
            kill_point("token_cache_chunk")
            texts = self.dataset.texts(range(lo, min(lo + CHUNK_DOCS, n)))
            encodings = encode_batch(self.tok.backend, texts, add_special_tokens=False)
            lengths[lo : lo + len(texts)] = [len(e) + 1 for e in encodings]
            if out is not None:
                flat: list[int] = []
                for e in encodings:
                    flat += e.ids
                    flat.append(self.sep)
                out.write(np.array(flat, self.dtype).tobytes())
        return lengths

    # ---- reading --------------------------------------------------------------------------------
    def _streamed_docs(self, docs: Sequence[int]) -> dict[int, np.ndarray]:
        with self._lock:
            have = {d: self._docs[d] for d in docs if d in self._docs}
        missing = [d for d in docs if d not in have]
        ids = encode_texts(self.tok, self.dataset.texts(missing))
        with self._lock:
            for d, x in zip(missing, ids):
                have[d] = self._docs[d] = np.array([*x, self.sep], np.int32)
            while len(self._docs) > 4 * CHUNK_DOCS:
                self._docs.popitem(last=False)
        return have

    def spans(self, spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Stream slices [start, stop) as int32 arrays (one tokenizer call for all of them when streamed)."""
        if self.tokens is not None:
            return [np.asarray(self.tokens[a:b], np.int32) for a, b in spans]
        if not spans:
            return []
        firsts = np.searchsorted(self.doc_offsets, [a for a, _ in spans], "right") - 1
        lasts = np.searchsorted(self.doc_offsets, [max(a, b - 1) for a, b in spans], "right") - 1
        needed = sorted({d for f, l in zip(firsts, lasts) for d in range(f, l + 1)})
        docs = self._streamed_docs(needed)
        out = []
        for (a, b), f, l in zip(spans, firsts, lasts):
            joined = np.concatenate([docs[d] for d in range(f, l + 1)])
            base = self.doc_offsets[f]
            out.append(joined[a - base : b - base])
        return out


def _remove_dead_builds(path: str) -> None:
    """Remove `path.tmp<pid>` directories left by builds whose process no longer runs (killed mid-build)."""
    folder, base = os.path.split(path)
    for name in os.listdir(folder or ".") if os.path.isdir(folder or ".") else []:
        pid = name[len(base) + 4 :] if name.startswith(base + ".tmp") else ""
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
