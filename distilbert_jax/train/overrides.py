"""`--set key=value` overrides of a JSON config: parsed as JSON, applied to the config dict, and errors about
a value a flag set blamed on that flag (not on the file), with the JSON error and the quoting to use."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from .config import ConfigError

T = TypeVar("T")
_JSON_START = ('{', '[', '"')  # a value starting so is meant as JSON: a parse error is an error, not a string


def parse_value(key: str, text: str) -> Any:
    """The JSON value of `--set key=text`; text that is not JSON is a string (`--set out_dir=runs/x`), except
    text that starts like a JSON object, list or string: its parse error is raised, naming the flag."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        start = text.lstrip()[:1]
        if start in _JSON_START:
            example = _closed(text) or {"{": '{"key": 1}', "[": "[1, 2]", '"': '"some text"'}[start]
            raise ConfigError(f"--set {key}={text}: not valid JSON: {e.msg} at character {e.pos}; the value is "
                              f"parsed as JSON: close its brackets and quotes, and quote the whole flag for the "
                              f"shell, e.g. --set '{key}={example}'") from None  # fmt: skip
        return text


def _closed(text: str) -> str | None:
    """`text` with the closing brackets / quote it lacks, if that makes it JSON."""
    for suffix in ("}", "]", '"', '"}', '"]', "]}", "}}", '"}}'):
        try:
            json.loads(text + suffix)
            return text + suffix
        except json.JSONDecodeError:
            pass
    return None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`["optim.learning_rate=1e-3", "total_steps=50"]` applied to a config dict (values parsed as JSON)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a section")
        node[leaf] = parse_value(key, value)
    return data


def _mentions(message: str, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    if message.startswith("unknown config key") and f"'{leaf}'" in message:
        return not parent or f"'{parent}'" in message
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", message) is not None


def blame(error: ConfigError, path: str | os.PathLike | None, overrides: list[str]) -> ConfigError:
    """`error` (raised while building a config from file `path` + `overrides`) restated: about a key a `--set`
    flag set, it names the flag (the last one for that key) and, where a string was expected, how to quote
    one; otherwise it names the file."""
    message = str(error)
    for item in reversed(overrides):
        key, _, text = item.partition("=")
        if not _mentions(message, key):
            continue
        hint = ""
        if re.search(r"must be str\b|expected .*\bstr\b", message) and not text.startswith('"'):
            hint = f"; --set values are JSON: for the string \"{text}\" write --set {key}='\"{text}\"'"
        elif re.search(r"\bgot str\b", message):
            hint = " (--set values are JSON; text that is not JSON is taken as a string)"
        return ConfigError(f"--set {item}: {message}{hint}")
    return ConfigError(f"{os.fspath(path)}: {message}") if path else error


def build_config(build: Callable[[dict[str, Any]], T], data: dict[str, Any], path: str | os.PathLike | None,
                 overrides: list[str]) -> T:  # fmt: skip
    """`build(data with the overrides applied)`; a `ConfigError` names the flag or the file (`blame`)."""
    try:
        return build(apply_overrides(data, list(overrides)))
    except ConfigError as e:
        if str(e).startswith("--set "):
            raise
        raise blame(e, path, list(overrides)) from None
