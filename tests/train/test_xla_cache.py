"""Issue 21 item 8, XLA compilation cache: an entry torn by a kill mid-write (JAX writes in place and never
replaces an entry) is detected when the cache is enabled, reported, removed and compiled again — never
reread on every run."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = """
import sys, warnings
warnings.simplefilter("always")
import jax, jax.numpy as jnp
from distilbert_jax.train.parallel import enable_compile_cache
enable_compile_cache(sys.argv[1])
print(float(jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0)(jnp.arange(4.0)).sum()))
"""


def _run(cache):
    r = subprocess.run([sys.executable, "-c", CHILD, str(cache)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def _entries(cache):
    return sorted(n for n in os.listdir(cache) if n.endswith("-cache"))


def test_torn_compile_cache_entry_is_reported_removed_and_rebuilt(tmp_path):
    from jax._src.compilation_cache import decompress_executable

    cache = tmp_path / "xla"
    first = _run(cache)
    names = _entries(cache)
    assert names
    whole = {n: (cache / n).read_bytes() for n in names}
    for n in names:  # what a kill -9 during JAX's in-place write leaves
        (cache / n).write_bytes(whole[n][: len(whole[n]) // 2])
    second = _run(cache)
    assert second.stdout == first.stdout
    for n in names:
        assert f"{cache / n} is truncated or damaged" in second.stderr, second.stderr
        decompress_executable((cache / n).read_bytes())  # compiled and written again, whole
    third = _run(cache)  # whole entries: no warning, nothing removed
    assert "truncated or damaged" not in third.stderr and _entries(cache) == names
