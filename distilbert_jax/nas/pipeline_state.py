"""`pipeline_state.json`: each pipeline step's result, recorded with the **inputs** it ran on — the config
values it reads (sub-config files by content) and the recorded outputs of the steps it builds on. A rerun
skips a step whose inputs are unchanged and re-runs one whose inputs changed, saying which; its new output
then changes the inputs of every step after it, so those re-run too (and only those)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

from distilbert_jax.faults import kill_point
from distilbert_jax.jsonfile import read_json_object
from distilbert_jax.train.config import ConfigError

STATE_FILE = "pipeline_state.json"
INPUTS = "_inputs"  # step name -> the inputs it ran (or is running) on
SECONDS = "_seconds"  # step name -> its wall time


def digest(value: Any) -> str:
    """A short content hash of a JSON value (key order ignored)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded(value: Any) -> Any:
    """What the inputs record holds for a value: the value itself when short, else its digest."""
    return value if len(json.dumps(value, sort_keys=True, default=str)) <= 80 else digest(value)


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two inputs records, e.g. `constraint: '100' -> '50x'`."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a == b:
            continue
        if isinstance(b, str) and b.startswith("sha256:") and key.startswith("output of "):
            out.append(f"{key} changed")
        elif isinstance(b, str) and b.startswith("sha256:"):
            out.append(f"{key} changed (content)")
        else:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


class PipelineState:
    """The state file of one pipeline directory: step name -> recorded result, plus `_inputs` / `_seconds`."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, STATE_FILE)
        self.data: dict[str, Any] = read_json_object(self.path, ConfigError) if os.path.isfile(self.path) else {}
        self.reran: dict[str, list[str]] = {}  # steps re-run in this process because their inputs changed

    def output(self, name: str) -> str:
        """The digest of step `name`'s recorded result and inputs (an input of the steps built on it: any
        change upstream reaches every step after it, even one that left a result unchanged)."""
        return digest([self.data[name], self.data.get(INPUTS, {}).get(name)])

    def inputs_of(self, *steps: str, **values: Any) -> dict[str, Any]:
        """An inputs record: config values (`recorded`) and the outputs of `steps`."""
        return {**{k: recorded(v) for k, v in values.items()}, **{f"output of {s}": self.output(s) for s in steps}}

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)

    def run(self, name: str, fn: Callable[[], Any], log: Callable[[str], Any], outputs: Sequence[str],
            inputs: dict[str, Any]) -> Any:  # fmt: skip
        """Step `name`'s result: the recorded one if it ran on the same `inputs`, else `fn()` (recorded).
        When the inputs changed — or a cut run of this step had other inputs — the files in `outputs` are
        removed first, so a training step starts afresh instead of resuming the old run's checkpoints."""
        before = self.data.get(INPUTS, {}).get(name)
        if name in self.data and before in (None, inputs):  # None: recorded before inputs were (kept)
            log(f"[{name}] done before, skipped")
            return self.data[name]
        if before is not None and before != inputs:
            why = "; ".join(input_changes(before, inputs))
            cut = "" if name in self.data else " since its unfinished run"
            log(f"[{name}] inputs changed{cut}: {why}; re-running it")
            self.reran[name] = input_changes(before, inputs)
            self.data.pop(name, None)
            for path in outputs:
                _remove(path)
        else:
            log(f"[{name}] …")
        self.data.setdefault(INPUTS, {})[name] = inputs
        self._save()
        start = time.perf_counter()
        result = fn()
        kill_point(f"pipeline:{name}")  # the worst moment for a kill: the step's work done, not yet recorded
        self.data[name] = result
        self.data.setdefault(SECONDS, {})[name] = round(time.perf_counter() - start, 1)
        self._save()
        log(f"[{name}] finished in {self.data[SECONDS][name]:.0f} s")
        return result
