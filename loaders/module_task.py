"""A larger classification task built offline from the default corpus: which standard-library module
(top-level package or module: `email`, `asyncio`, `typing`, …) a docstring *sentence* comes from. The
embedded 8-way task labels whole docstrings and has 171 evaluation examples (standard error ~0.03); this
one has ~2,800 evaluation sentences over 16 classes (standard error <= 0.01).

Deterministic for a given corpus: sentences in corpus order, the classes with the most sentences (ties
by name), each docstring's sentences all on one side of the split (by a CRC of the docstring, so every
docstring of the corpus's own validation split — unseen by masked-LM training — is evaluation data),
and every sentence text kept once (its first occurrence, evaluation docstrings first), so no text is in
both splits and no sentence of an evaluation docstring is training data."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import zlib

from distilbert_jax.atomicfile import write_json

from .corpus import DefaultCorpus, _write, default_corpus
from .datasets import TextDataset

MODULE_TASK_VERSION = 1
_MIN_SENTENCE_CHARS = 30
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def docstring_sentences(doc: str) -> list[str]:
    """The sentences of a docstring: paragraphs (split at blank lines) with whitespace collapsed, cut after
    `.`/`!`/`?` before a capital; sentences shorter than 30 characters are dropped."""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        text = " ".join(para.split())
        out.extend(s for s in _SENTENCE_END.split(text) if len(s) >= _MIN_SENTENCE_CHARS)
    return out


def _is_eval(crc: int) -> bool:
    """Whether a docstring's sentences are evaluation data, by its CRC (`zlib.crc32` of its text): 7 in 20
    docstrings, among them all of the corpus's validation split (crc32 % 10 == 0)."""
    return crc % 10 == 0 or crc % 20 < 6


@dataclasses.dataclass(frozen=True)
class ModuleTask:
    """Paths of a built module task: `{train,valid}.jsonl` ({"text", "label"}) and `manifest.json`."""

    root: str
    label_names: tuple[str, ...]
    counts: dict

    def path(self, split: str) -> str:
        return os.path.join(self.root, f"{split}.jsonl")

    def classification(self, split: str = "train") -> TextDataset:
        return TextDataset.from_files(self.path(split), label_field="label", label_names=self.label_names)


def _read_manifest(root: str) -> ModuleTask:
    with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
        m = json.load(f)
    return ModuleTask(root, tuple(m["label_names"]), m["counts"])


def module_task(classes: int = 16, corpus: DefaultCorpus | None = None) -> ModuleTask:
    """Build (once, under the corpus root) or open the `classes`-way module task of `corpus` (default: the
    default corpus). Raises ValueError when `classes` < 2 or the corpus has fewer modules."""
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"classes must be an int >= 2, got {classes!r}")
    corpus = corpus or default_corpus()
    root = os.path.join(corpus.root, f"modules{classes}-v{MODULE_TASK_VERSION}")
    if os.path.isfile(os.path.join(root, "manifest.json")):
        return _read_manifest(root)
    labels, task_rows = _task_rows(corpus, classes)
    rows: dict[str, list[dict]] = {"train": [], "valid": []}
    for split, row, _ in task_rows:
        rows[split].append(row)
    os.makedirs(root, exist_ok=True)
    for split, split_rows in rows.items():
        _write(os.path.join(root, f"{split}.jsonl"), split_rows)
    counts = {s: len(r) for s, r in rows.items()}
    write_json(os.path.join(root, "manifest.json"), {
        "version": MODULE_TASK_VERSION, "label_names": labels, "counts": counts,
        "per_label": {s: dict(collections.Counter(r["label"] for r in rows[s])) for s in rows}}, indent=1)
    return ModuleTask(root, labels, counts)


def module_task_named(name: str, corpus: DefaultCorpus | None = None) -> ModuleTask:
    """The module task of a config value "modulesN" (e.g. "modules16"): `module_task(N)`; ValueError otherwise."""
    digits = name.removeprefix("modules") if isinstance(name, str) else ""
    if not digits.isdigit():
        raise ValueError(f"expected 'modulesN' (e.g. 'modules16'), got {name!r}")
    return module_task(int(digits), corpus)


def _task_rows(corpus: DefaultCorpus, classes: int) -> tuple[tuple[str, ...], list[tuple[str, dict, int]]]:
    """The `classes`-way task's label names (sorted) and (split, {"text", "label"}, CRC of its docstring) of every
    sentence, in file order: evaluation docstrings first, each sentence text once."""
    docs = []  # (label, eval?, sentences, crc) in corpus order
    for split in ("train", "valid"):
        with open(corpus.path("pretrain", split), encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                name = r["module"].split(".")[0]
                if not name.startswith("_"):  # private modules (_pydecimal, _pyio) duplicate public ones
                    crc = zlib.crc32(r["text"].encode())
                    docs.append((name, _is_eval(crc), docstring_sentences(r["text"]), crc))
    sizes = collections.Counter()
    for name, _, sents, _ in docs:
        sizes[name] += len(sents)
    if len(sizes) < classes:
        raise ValueError(f"the corpus has {len(sizes)} modules with sentences, fewer than classes={classes}")
    labels = tuple(sorted(sorted(sizes, key=lambda n: (-sizes[n], n))[:classes]))
    seen: set[str] = set()
    rows = []
    for name, is_eval, sents, crc in sorted(docs, key=lambda d: not d[1]):  # (stable) evaluation docstrings first:
        if name not in labels:  # a sentence also in a training docstring stays evaluation data
            continue
        for s in sents:
            if s not in seen:
                seen.add(s)
                rows.append((("valid" if is_eval else "train"), {"text": s, "label": name}, crc))
    return labels, rows


def _is_search_valid(crc: int) -> bool:
    """Whether a training docstring's sentences are the search's held-out part: 1 in 4 by CRC (a CRC digit
    independent of `_is_eval`'s)."""
    return (crc // 20) % 4 == 0


def search_split(task: ModuleTask, corpus: DefaultCorpus | None = None) -> dict[str, str]:
    """The training split of `task` cut in two by docstring, for a search's fitness (never its evaluation
    split): {"search_train": path, "search_valid": path}, about 3 : 1, built once beside the task's files.
    Every training sentence is in exactly one of them, in training-file order."""
    paths = {s: task.path(s) for s in ("search_train", "search_valid")}
    if all(os.path.isfile(p) for p in paths.values()):
        return paths
    corpus = corpus or default_corpus()
    rows: dict[str, list[dict]] = {s: [] for s in paths}
    for split, row, crc in _task_rows(corpus, len(task.label_names))[1]:
        if split == "train":
            rows["search_valid" if _is_search_valid(crc) else "search_train"].append(row)
    if sum(map(len, rows.values())) != task.counts["train"] or not all(rows.values()):
        raise ValueError(f"{task.root}: the corpus gives {sum(map(len, rows.values()))} training sentences, the task's "
                         f"manifest {task.counts['train']}: rebuild the task (remove {task.root})")  # fmt: skip
    for split, split_rows in rows.items():
        _write(paths[split], split_rows)
    return paths
