"""Issue 21 item 4: every `python -m` entry point, given a missing or empty path (or an output path it cannot
write), exits 2 with one `error:` line naming the path — no traceback, and before any slow work."""

import ast
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest

from distilbert_jax.clitools import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# entry points that take no path from the user: internal workers fed by their parent, and benches without one
NO_PATH = {"rl.mlir.timer": "the timing worker, fed over stdin by rl.mlir.timer itself",
           "bench.processes": "the benchmark worker, fed over stdin by bench.processes itself",
           "bench.ppo_speed": "takes no path", "bench.loader_speed": "takes no path"}  # fmt: skip


def cases(tmp) -> list[tuple[str, list[str], str]]:
    """(module, argv, the path the error must name)."""
    missing, empty, empty_file, a_file = (os.path.join(tmp, n) for n in ("missing", "empty", "empty.json", "afile"))
    under_file = os.path.join(a_file, "out")
    arch = '{"layers": 1, "hidden": 32, "heads": 1, "qkv": 16, "ffn": 32}'
    nas = ["--compile-cache", "off"]
    c = [("distilbert_jax.convert", [p], p) for p in (missing, empty)]
    c += [("distilbert_jax.train", ["mlm", "--config", p, *nas], p) for p in (missing, empty_file, empty)]
    c += [("distilbert_jax.nas", ["train", "--config", p, *nas], p) for p in (missing, empty_file)]
    for p in (missing, empty):
        c += [("distilbert_jax.nas", ["extract", "--supernet", p, "--arch", arch, "--out", os.path.join(tmp, "x")], p),
              ("distilbert_jax.nas", ["latency", "--supernet", p, "--out", os.path.join(tmp, "lat"), *nas], p),
              ("distilbert_jax.nas", ["candidates", "--latency", p, "--constraint", "7", "--out", os.path.join(tmp, "c")], p),
              ("bench.parity", ["--model-dir", p], p)]  # fmt: skip
    c += [("distilbert_jax.nas", ["search", "--method", "random", "--supernet", missing, "--candidates", p], p)
          for p in (missing, empty_file)]  # fmt: skip
    c += [("distilbert_jax.nas", ["compare", "--supernet", missing, "--candidates", missing, "--evaluations", "2"], missing),
          ("distilbert_jax.nas", ["pipeline", "--config", missing], missing),
          ("distilbert_jax.nas", ["pipeline", "--config", empty_file], empty_file),
          ("distilbert_jax.nas", ["compare-arms", "--config", missing], missing),
          ("distilbert_jax.nas", ["compare-arms", "--config", empty_file], empty_file),
          ("distilbert_jax.nas", ["rank-check", "--config", missing], missing),
          ("distilbert_jax.nas", ["rank-check", "--config", empty_file], empty_file),
          ("bench.parity", ["--model-dir", ""], "--model-dir")]  # fmt: skip
    c += [("rl.train", ["--config", p], p) for p in (missing, empty_file)]
    c.append(("rl.train", ["--config", os.path.join(tmp, "learned.json")], missing))   # its cost_model is missing
    c += [("rl.mlir.evaluate", ["--out", under_file], under_file), ("rl.mlir.validate", ["--out", under_file], under_file)]
    c += [("rl.mlir.tune", ["--spec", p], p) for p in (missing, empty_file)] + [("rl.mlir.tune", ["--out", under_file], under_file)]
    c.append(("rl.mlir.dataset", ["--n", "1", "--out", under_file], under_file))
    c += [("rl.mlir.tune", ["--rank-with", p], p) for p in (missing, empty)]
    c += [("rl.cost_learned", ["train", "--data", missing], missing),
          ("rl.cost_learned", ["train", "--data", a_file, "--out", under_file], under_file),
          ("rl.cost_learned", ["evaluate", "--model", missing, "--data", a_file], missing),
          ("rl.cost_learned", ["search", "--model", empty, "--data", a_file], empty),
          ("rl.cost_learned", ["search", "--model", os.path.join(tmp, "model"), "--data", a_file, "--policy", missing], missing)]
    for m in ("bench.speed", "bench.throughput", "bench.train_speed", "bench.gemm", "bench.iree_model"):
        c.append((m, ["--out", under_file], under_file))
    for m in ("bench.nas_speed", "bench.nas_sandwich"):
        c += [(m, ["--config", missing], missing), (m, ["--config", empty_file], empty_file), (m, ["--out", under_file], under_file)]
    return c


def entry_points() -> set[str]:
    """Every module of the repository runnable with `python -m` (a `__main__.py` or a `__main__` block)."""
    found = set()
    for top in ("distilbert_jax", "loaders", "rl", "bench"):
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                path = os.path.join(folder, name)
                if not name.endswith(".py"):
                    continue
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                if name == "__main__.py":
                    found.add(module.rsplit(".", 1)[0])
                elif 'if __name__ == "__main__"' in open(path, encoding="utf-8").read():
                    found.add(module)
    return found


@pytest.fixture
def bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")   # passes --model's check, so --policy's is reached
    (tmp_path / "learned.json").write_text(json.dumps({"env": "refine", "model_type": "mlp", "reward_backend": "learned",
                                                       "cost_model": str(tmp_path / "missing")}))
    return str(tmp_path)


def test_every_entry_point_is_covered(bad_paths):
    tested = {m for m, _, _ in cases(bad_paths)}
    assert entry_points() == tested | set(NO_PATH), "a new `python -m` entry point: add it to cases() or NO_PATH"
    for module in tested:  # and each runs its main through run_cli (OSError and InputError -> one line, exit 2)
        origin = importlib.util.find_spec(module).origin
        if origin.endswith("__init__.py"):
            main_code = open(os.path.join(os.path.dirname(origin), "__main__.py"), encoding="utf-8").read()
        else:
            source = open(origin, encoding="utf-8").read()
            main_code = next(ast.get_source_segment(source, n) for n in ast.parse(source).body
                             if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))  # fmt: skip
        assert "run_cli(main)" in main_code, f"{origin}: its __main__ must call sys.exit(run_cli(main))"


def main_of(module: str):
    """The `main` that `python -m module` runs (a package's is its `cli.main`)."""
    is_package = importlib.util.find_spec(module).origin.endswith("__init__.py")
    return importlib.import_module(module + ".cli" if is_package else module).main


FAST_S = 20  # bad input must be refused before the slow work starts


class TooSlow(Exception):
    pass


def _too_slow(*_):
    raise TooSlow


def test_bad_paths_exit_2_with_one_line(bad_paths, capsys):
    problems = []
    for module, argv, named in cases(bad_paths):
        signal.signal(signal.SIGALRM, _too_slow)
        signal.alarm(FAST_S)
        try:
            status = run_cli(main_of(module), argv)
        except SystemExit as e:  # argparse
            status = e.code
        except TooSlow:
            status = f"still running after {FAST_S} s"
        finally:
            signal.alarm(0)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if "error:" in ln]
        if status != 2 or "Traceback" in err or len(lines) != 1 or named not in lines[0]:
            problems.append(f"{module} {argv}: exit {status}, stderr {err[-400:]!r}")
    assert not problems, "\n".join(problems)
    assert not os.path.exists(os.path.join(bad_paths, "x")), "nothing is written for bad input"


def test_python_m_bench_parity_missing_model_dir(bad_paths):
    """The command the issue ran, as a real process: one line, exit 2."""
    missing = os.path.join(bad_paths, "missing")
    r = subprocess.run([sys.executable, "-m", "bench.parity", "--model-dir", missing], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: --model-dir {missing} does not exist"], r.stderr
