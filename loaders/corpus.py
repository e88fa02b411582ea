"""The default corpus, built offline from this Python's standard-library docstrings (read with `ast`,
nothing imported), plus two tiny labelled tasks derived from it, and WordPiece tokenizer training."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import sys
import sysconfig
import zlib
from collections.abc import Iterable, Sequence

from distilbert_jax.tokenizer import Tokenizer

from .datasets import TextDataset

CORPUS_VERSION = 1
# Classification task: which of these stdlib packages a docstring comes from.
PACKAGES = ("asyncio", "email", "http", "importlib", "logging", "multiprocessing", "unittest", "xml")
# Token task tags: CODE (identifier-like: has _ . () or CamelCase inner capital), NUM, O.
TAGS = ("CODE", "NUM", "O")
_SKIP_DIRS = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__", "turtledemo", "ensurepip"}
_CODE = re.compile(r"[\w.]*(_|\.|\(\)|[a-z][A-Z])[\w.()]*")
_NUM = re.compile(r"[-+]?\d[\d.,]*")
_MIN_CHARS, _MAX_WORDS, _VALID_EVERY = 40, 48, 10


def default_root() -> str:
    """`$DISTILBERT_JAX_DATA` or `~/.cache/distilbert_jax`, then `default_corpus/py<version>-v<n>`."""
    base = os.environ.get("DISTILBERT_JAX_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "distilbert_jax")
    return os.path.join(base, "default_corpus", f"py{sys.version_info[0]}.{sys.version_info[1]}-v{CORPUS_VERSION}")


@dataclasses.dataclass(frozen=True)
class DefaultCorpus:
    """Paths of the built corpus: `pretrain_{train,valid}.jsonl` ({"text", "module"}),
    `classify_{train,valid}.jsonl` ({"text", "label"}: one of PACKAGES), `tokens_{train,valid}.jsonl`
    ({"tokens", "tags"}: TAGS per word)."""

    root: str

    def path(self, task: str, split: str) -> str:
        return os.path.join(self.root, f"{task}_{split}.jsonl")

    def pretrain(self, split: str = "train") -> TextDataset:
        return TextDataset.from_files(self.path("pretrain", split))

    def classification(self, split: str = "train") -> TextDataset:
        return TextDataset.from_files(self.path("classify", split), label_field="label", label_names=PACKAGES)

    def token_classification(self, split: str = "train") -> TextDataset:
        return TextDataset.from_files(self.path("tokens", split), tokens_field="tokens", tags_field="tags",
                                      label_names=TAGS)  # fmt: skip

    def tokenizer(self, vocab_size: int = 8000):
        """The WordPiece tokenizer trained on the pre-training split (built once, under `root/tokenizer-<V>`)."""
        out = os.path.join(self.root, f"tokenizer-{vocab_size}")
        if not os.path.isfile(os.path.join(out, "tokenizer.json")):
            build_tokenizer([self.path("pretrain", "train")], out, vocab_size=vocab_size)
        return Tokenizer.from_pretrained(out)


def _docstrings(stdlib: str) -> Iterable[tuple[str, str]]:
    """(module path, docstring) in a fixed order: sorted walk, ast order within a file."""
    for d, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS and not x.startswith((".", "config-")))
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, ValueError):  # a few stdlib files are deliberately invalid
                continue
            module = os.path.relpath(path, stdlib)[:-3].replace(os.sep, ".").removesuffix(".__init__")
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= _MIN_CHARS:
                        yield module, doc


def word_tag(word: str) -> str:
    """The token-task tag of a whitespace-split word."""
    core = word.strip("`'\",;:!?").rstrip(".")
    if _NUM.fullmatch(core):
        return "NUM"
    return "CODE" if _CODE.fullmatch(core) else "O"


def _write(path: str, rows: Sequence[dict]) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(path + ".tmp", path)


def default_corpus(root: str | os.PathLike | None = None, stdlib: str | None = None) -> DefaultCorpus:
    """Build (once; deterministic for a given Python version) the default corpus under `root`
    (default `default_root()`) from the standard library's docstrings. ~6k documents, ~1.6 MB of text."""
    corpus = DefaultCorpus(os.fspath(root) if root is not None else default_root())
    done = os.path.join(corpus.root, "manifest.json")
    if os.path.isfile(done):
        return corpus
    os.makedirs(corpus.root, exist_ok=True)
    seen: set[str] = set()
    split: dict[str, dict[str, list]] = {s: {"pretrain": [], "classify": [], "tokens": []} for s in ("train", "valid")}
    for module, doc in _docstrings(stdlib or sysconfig.get_paths()["stdlib"]):
        if doc in seen:
            continue
        seen.add(doc)
        rows = split["valid" if zlib.crc32(doc.encode()) % _VALID_EVERY == 0 else "train"]
        rows["pretrain"].append({"text": doc, "module": module})
        package = module.split(".")[0]
        if package in PACKAGES:
            rows["classify"].append({"text": doc, "label": package})
        words = doc.split("\n\n")[0].split()[:_MAX_WORDS]
        rows["tokens"].append({"tokens": words, "tags": [word_tag(w) for w in words]})
    counts = {}
    for s, tasks in split.items():
        for task, rows in tasks.items():
            _write(corpus.path(task, s), rows)
            counts[f"{task}_{s}"] = len(rows)
    with open(done, "w", encoding="utf-8") as f:
        json.dump({"version": CORPUS_VERSION, "python": sys.version.split()[0], "counts": counts,
                   "packages": PACKAGES, "tags": TAGS}, f, indent=1)  # fmt: skip
    return corpus


def build_tokenizer(
    data: Sequence[str | os.PathLike] | TextDataset,
    out_dir: str | os.PathLike,
    *,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
    model_max_length: int = 512,
):
    """Train a BERT WordPiece vocabulary on text files (any `TextDataset.from_files` format, field
    "text") or a dataset; save an HF-loadable tokenizer directory at `out_dir`. → `dj.Tokenizer`."""
    import tokenizers
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    ds = data if isinstance(data, TextDataset) else TextDataset.from_files(list(data))
    backend = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)  # fmt: skip
    chunk = 1024
    backend.train_from_iterator((t for lo in range(0, len(ds), chunk)
                                 for t in ds.texts(range(lo, min(lo + chunk, len(ds))))), trainer, length=len(ds))  # fmt: skip
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    vocab = sorted(backend.get_vocab().items(), key=lambda kv: kv[1])
    vocab_path = os.path.join(out_dir, "vocab.txt")
    with open(vocab_path, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token, _ in vocab)
    tok = Tokenizer.from_vocab(vocab_path, lowercase=lowercase, model_max_length=model_max_length)
    tok.save_pretrained(out_dir)
    return tok
