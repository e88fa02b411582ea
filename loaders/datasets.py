"""Text datasets indexed by byte offsets: records are read from disk on demand, so a file larger than
RAM works (the index costs ~12 bytes per record, labels 4 bytes per record)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from array import array
from collections.abc import Iterator, Sequence

import numpy as np

FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv"}
_INT = re.compile(r"-?\d+\Z")
_MAX_EXAMPLES = 5


class DataError(ValueError):
    """Bad input data; the message names `file:line` and what was expected."""


@dataclasses.dataclass
class LoadStats:
    """What indexing found: `records` kept, `skipped[kind]` counts (kinds: invalid_json, not_utf8,
    missing_field, bad_type, bad_row, empty_text, unknown_label, length_mismatch, empty_file),
    `blank_lines` (separators, never data) and the first few problems as `file:line: message`."""

    records: int = 0
    blank_lines: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


def _format_of(path: str, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in ("txt", "jsonl", "csv"):
            raise ValueError(f"format must be 'auto', 'txt', 'jsonl' or 'csv', got {fmt!r}")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{path}: cannot tell the format from {ext!r}; pass format= one of txt, jsonl, csv")
    return FORMATS[ext]


def _decode(raw: bytes) -> tuple[str | None, str]:
    """(text, "") or (None, reason) for bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"


def _label_key(value) -> int | str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return value
    value = str(value).strip()
    return int(value) if _INT.match(value) else value


class TextDataset:
    """Records from text files: `ds[i]` → `{"text": str}` plus `"label": int` (classification) or
    `"words": list[str], "tags": list[int]` (token classification). Build with `from_files`.

    A grain `RandomAccessDataSource` (`__len__` + `__getitem__`)."""

    def __init__(self, paths: list[str], formats: list[str], starts: np.ndarray, ends: np.ndarray,
                 file_of: np.ndarray, options: dict, stats: LoadStats, labels: np.ndarray | None = None,
                 label_names: list[str] | None = None):  # fmt: skip
        self.paths, self.formats, self.options, self.stats = paths, formats, options, stats
        self._starts, self._ends, self._file_of = starts, ends, file_of
        self.labels = labels  # [N] int32 for classification / None
        self.label_names = label_names
        self._headers: dict[int, list[str]] = {}
        self._fds: dict[int, int] = {}
        self.kind = ("tokens" if options.get("tokens_field") else "classification" if options.get("label_field")
                     else "qa" if options.get("question_field") else "text")  # fmt: skip

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        text_field: str = "text",
        label_field: str | None = None,
        tokens_field: str | None = None,
        tags_field: str = "tags",
        question_field: str | None = None,
        answers_field: str = "answers",
        label_names: Sequence[str] | None = None,
        format: str = "auto",
        documents: str = "lines",
        on_error: str = "raise",
    ) -> "TextDataset":
        """Index text files. `.txt`: one record per line (`documents="lines"`) or per blank-line
        separated block (`documents="blocks"`); `.jsonl`: one JSON object per line, text in `text_field`;
        `.csv`/`.tsv`: a header row naming `text_field` (and `label_field`).

        Classification: set `label_field` (labels: ints, or strings mapped to sorted `label_names`).
        Token classification (JSONL): set `tokens_field` (a list of words) and `tags_field` (a list of
        tag names, one per word). Pass the training set's `label_names` to a validation set.
        Extractive QA (JSONL, SQuAD style): set `question_field`; `text_field` is the context and
        `answers_field` holds `{"text": [...], "answer_start": [...]}` (the first answer is used; its
        text must equal the context at answer_start).
        `on_error="raise"` stops at the first bad record (`file:line: message`); `"skip"` skips it,
        counts it in `stats.skipped` and warns once with the counts."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("paths is empty: pass at least one file")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if documents not in ("lines", "blocks"):
            raise ValueError(f"documents must be 'lines' or 'blocks', got {documents!r}")
        if sum(map(bool, (label_field, tokens_field, question_field))) > 1:
            raise ValueError("set one of label_field (classification), tokens_field (token classification) "
                             "or question_field (question answering)")
        for p in paths:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{p} does not exist or is not a file")
        formats = [_format_of(p, format) for p in paths]
        if (tokens_field or question_field) and any(f != "jsonl" for f in formats):
            raise ValueError("token classification and question answering read JSONL files")
        options = dict(text_field=text_field, label_field=label_field, tokens_field=tokens_field,
                       tags_field=tags_field, documents=documents, on_error=on_error)  # fmt: skip
        if question_field:  # only when set, so other datasets' fingerprints (and caches) stay as they were
            options.update(question_field=question_field, answers_field=answers_field)
        indexer = _Indexer(options, label_names)
        for i, (p, f) in enumerate(zip(paths, formats)):
            indexer.index_file(i, p, f)
        stats = indexer.finish()
        labels, names = indexer.label_table()
        ds = cls(paths, formats, np.frombuffer(indexer.starts, np.int64), np.frombuffer(indexer.ends, np.int64),
                 np.frombuffer(indexer.file_of, np.int32), options, stats, labels, names)  # fmt: skip
        ds._headers = indexer.headers
        return ds

    # ---- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._starts)

    @property
    def num_labels(self) -> int | None:
        return None if self.label_names is None else len(self.label_names)

    def _raw(self, i: int) -> bytes:
        f = int(self._file_of[i])
        fd = self._fds.get(f)
        if fd is None:
            fd = self._fds[f] = os.open(self.paths[f], os.O_RDONLY)
        start, end = int(self._starts[i]), int(self._ends[i])
        return os.pread(fd, end - start, start)

    def _fields(self, i: int) -> dict:
        f = int(self._file_of[i])
        text = self._raw(i).decode("utf-8")
        if self.formats[f] == "jsonl":
            return json.loads(text)
        if self.formats[f] == "csv":
            return dict(zip(self._headers[f], next(csv.reader(io.StringIO(text), delimiter=_delimiter(self.paths[f])))))
        return {self.options["text_field"]: text.strip()}

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for a dataset of {len(self)}")
        i %= len(self)
        rec = self._fields(i)
        if self.kind == "tokens":
            names = {n: k for k, n in enumerate(self.label_names)}
            words = [str(w) for w in rec[self.options["tokens_field"]]]
            return {"words": words, "tags": [names[str(t)] for t in rec[self.options["tags_field"]]]}
        out = {"text": rec[self.options["text_field"]]}
        if self.kind == "qa":
            answers = rec[self.options["answers_field"]]
            out.update(question=rec[self.options["question_field"]], answer_text=answers["text"][0],
                       answer_start=int(answers["answer_start"][0]))  # fmt: skip
        if self.labels is not None:
            out["label"] = int(self.labels[i])
        return out

    def texts(self, indices: Sequence[int]) -> list[str]:
        """The texts of records `indices` (one read per record); for token data, the words joined by spaces."""
        records = (self[i] for i in indices)
        return [r["text"] if "text" in r else " ".join(r["words"]) for r in records]

    def fingerprint(self) -> str:
        """Changes when a source file (path, size, mtime, first/last 64 KiB) or an option changes."""
        h = hashlib.sha256(json.dumps(self.options, sort_keys=True).encode())
        for p in self.paths:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
            with open(p, "rb") as f:
                h.update(f.read(65536))
                f.seek(max(0, st.st_size - 65536))
                h.update(f.read(65536))
        return h.hexdigest()

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            os.close(fd)

    def __getstate__(self):  # picklable for grain worker processes: file descriptors are reopened
        return {**self.__dict__, "_fds": {}}


def _delimiter(path: str) -> str:
    return "\t" if path.lower().endswith(".tsv") else ","


class _Indexer:
    """One streaming pass per file: validates every record and keeps only its byte range."""

    def __init__(self, options: dict, label_names: Sequence[str] | None):
        self.o = options
        self.starts, self.ends, self.file_of = array("q"), array("q"), array("i")
        self.stats = LoadStats()
        self.raw_labels: list = []
        self.given_names = None if label_names is None else [str(n) for n in label_names]
        self.tag_names: set[str] = set()
        self.headers: dict[int, list[str]] = {}

    def problem(self, kind: str, where: str, message: str) -> None:
        if self.o["on_error"] == "raise":
            raise DataError(f"{where}: {message} (pass on_error='skip' to skip such records)")
        self.stats.skipped[kind] = self.stats.skipped.get(kind, 0) + 1
        if len(self.stats.examples) < _MAX_EXAMPLES:
            self.stats.examples.append(f"{where}: {message}")

    def keep(self, file_idx: int, start: int, end: int) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.file_of.append(file_idx)

    def index_file(self, file_idx: int, path: str, fmt: str) -> None:
        before = len(self.starts)
        with open(path, "rb") as f:
            if fmt == "txt" and self.o["documents"] == "blocks":
                self._index_blocks(file_idx, path, f)
            else:
                self._index_lines(file_idx, path, f, fmt)
        if len(self.starts) == before:
            self.problem("empty_file", path, "empty file: no records found")

    def _lines(self, f) -> Iterator[tuple[int, int, int, bytes]]:
        """(line number, start offset, end offset without the newline, stripped bytes)."""
        pos = 0
        for n, raw in enumerate(f, 1):
            body = raw.rstrip(b"\r\n")
            yield n, pos, pos + len(body), body
            pos += len(raw)

    def _index_blocks(self, file_idx: int, path: str, f) -> None:
        block: list = []  # [first line, start, end, bad reason]

        def close():
            if block:
                if block[3]:
                    self.problem("not_utf8", f"{path}:{block[0]}", block[3])
                else:
                    self.keep(file_idx, block[1], block[2])
                block.clear()

        for n, start, end, body in self._lines(f):
            if not body.strip():
                self.stats.blank_lines += 1
                close()
                continue
            _, bad = _decode(body)
            if not block:
                block.extend([n, start, end, ""])
            block[2] = end
            if bad and not block[3]:
                block[3] = f"line {n}: {bad}" if n != block[0] else bad
        close()

    def _index_lines(self, file_idx: int, path: str, f, fmt: str) -> None:
        header: list[str] | None = None
        pending: list = []  # CSV records may span lines (quoted newlines)
        for n, start, end, body in self._lines(f):
            if pending:
                pending[2], pending[3] = end, pending[3] + b"\n" + body
                n, start, end, body = pending
            elif not body.strip():
                self.stats.blank_lines += 1
                continue
            if fmt == "csv" and body.count(b'"') % 2:
                pending = [n, start, end, body]
                continue
            pending = []
            where = f"{path}:{n}"
            text, bad = _decode(body)
            if text is None:
                self.problem("not_utf8", where, bad)
                continue
            if fmt == "txt":
                self.keep(file_idx, start, end)
                continue
            if fmt == "csv":
                row = next(csv.reader(io.StringIO(text), delimiter=_delimiter(path)))
                if header is None:
                    header = self.headers[file_idx] = row
                    needed = [self.o["text_field"]] + ([self.o["label_field"]] if self.o["label_field"] else [])
                    missing = [c for c in needed if c not in header]
                    if missing:
                        raise DataError(f"{where}: CSV header {header} lacks the column(s) {missing}")
                    continue
                if len(row) != len(header):
                    self.problem("bad_row", where, f"expected {len(header)} columns, got {len(row)}")
                    continue
                rec = dict(zip(header, row))
            else:
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError as e:
                    self.problem("invalid_json", where, f"invalid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(rec, dict):
                    self.problem("bad_type", where, f"expected a JSON object, got {type(rec).__name__}")
                    continue
            if self._check(rec, where):
                self.keep(file_idx, start, end)
        if pending:
            self.problem("bad_row", f"{path}:{pending[0]}", "unterminated quoted CSV field")

    def _field(self, rec: dict, name: str, types: tuple, where: str):
        if name not in rec:
            self.problem("missing_field", where, f"missing field {name!r} (has {sorted(rec)[:8]})")
            return None
        value = rec[name]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            expected = " or ".join(t.__name__ for t in types)
            self.problem("bad_type", where, f"field {name!r} must be {expected}, got {type(value).__name__}: {value!r:.40}")
            return None
        return value

    def _check(self, rec: dict, where: str) -> bool:
        o = self.o
        if o["tokens_field"]:
            words = self._field(rec, o["tokens_field"], (list,), where)
            tags = None if words is None else self._field(rec, o["tags_field"], (list,), where)
            if tags is None:
                return False
            if len(words) != len(tags) or not words:
                self.problem("length_mismatch", where, f"{len(words)} words but {len(tags)} tags (need equal, non-zero)")
                return False
            tags = [str(t) for t in tags]
            if self.given_names is not None and not set(tags) <= set(self.given_names):
                self.problem("unknown_label", where, f"tags {sorted(set(tags) - set(self.given_names))} not in label_names")
                return False
            self.tag_names.update(tags)
            return True
        text = self._field(rec, o["text_field"], (str,), where)
        if text is None:
            return False
        if not text.strip():
            self.problem("empty_text", where, f"field {o['text_field']!r} is empty")
            return False
        if o.get("question_field"):
            return self._check_qa(rec, text, where)
        if o["label_field"]:
            label = self._field(rec, o["label_field"], (str, int), where)
            if label is None:
                return False
            key = _label_key(label)
            if self.given_names is not None and str(key) not in self.given_names:
                self.problem("unknown_label", where, f"label {key!r} not in label_names {self.given_names[:10]}")
                return False
            self.raw_labels.append(key)
        return True

    def _check_qa(self, rec: dict, context: str, where: str) -> bool:
        o = self.o
        question = self._field(rec, o["question_field"], (str,), where)
        answers = None if question is None else self._field(rec, o["answers_field"], (dict,), where)
        if answers is None:
            return False
        texts, starts = answers.get("text"), answers.get("answer_start")
        if not (isinstance(texts, list) and isinstance(starts, list) and texts and len(texts) == len(starts)):
            self.problem("bad_answer", where, f"{o['answers_field']!r} needs equal, non-empty lists 'text' and "
                         f"'answer_start', got {answers!r:.60}")  # fmt: skip
            return False
        text, start = texts[0], starts[0]
        if not isinstance(text, str) or not text or not isinstance(start, int) or isinstance(start, bool):
            self.problem("bad_answer", where, f"answer must be a non-empty str at an int start, got {text!r:.30} @ {start!r}")
            return False
        if context[start : start + len(text)] != text:
            found = context[max(start, 0) : max(start, 0) + len(text)]
            self.problem("bad_answer", where, f"answer {text!r:.40} is not at context[{start}:] (found {found!r:.40})")
            return False
        return True

    def finish(self) -> LoadStats:
        self.stats.records = len(self.starts)
        if self.stats.num_skipped:
            warnings.warn(f"skipped {self.stats.num_skipped} bad record(s) {self.stats.skipped}; first: "
                          f"{self.stats.examples[0]}", stacklevel=3)  # fmt: skip
        if not self.stats.records:
            raise DataError(f"no records found ({self.stats.num_skipped} skipped: {self.stats.skipped}, "
                            f"e.g. {self.stats.examples[:1]})")  # fmt: skip
        return self.stats

    def label_table(self) -> tuple[np.ndarray | None, list[str] | None]:
        if self.o["tokens_field"]:
            return None, self.given_names or sorted(self.tag_names)
        if not self.o["label_field"]:
            return None, None
        keys = self.raw_labels
        if self.given_names is not None:
            index = {n: i for i, n in enumerate(self.given_names)}
            return np.array([index[str(k)] for k in keys], np.int32), self.given_names
        if all(isinstance(k, int) for k in keys):
            if min(keys) < 0:
                raise DataError(f"integer labels must be >= 0, got {min(keys)}")
            return np.array(keys, np.int32), [str(i) for i in range(max(keys) + 1)]
        names = sorted({str(k) for k in keys})
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[str(k)] for k in keys], np.int32), names
