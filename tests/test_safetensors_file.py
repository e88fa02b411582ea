"""The non-mmap safetensors reader, zero-copy placement on CPU, and the memory it takes to load."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from distilbert_jax.safetensors_file import ALIGN, SafetensorsError, SafetensorsFile, to_device


@pytest.fixture
def mixed_file(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((7, 5)).astype(np.float32),
        "f16": rng.standard_normal((3,)).astype(np.float16),
        "bf16": rng.standard_normal((4, 2)).astype(ml_dtypes.bfloat16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 4), np.float32),
    }
    path = str(tmp_path / "m.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    return path, tensors


def test_reads_every_dtype_aligned(mixed_file):
    path, tensors = mixed_file
    with SafetensorsFile(path) as f:
        assert sorted(f.keys()) == sorted(tensors) and f.metadata() == {"format": "pt"}
        for key, want in tensors.items():
            got = f.get_tensor(key)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            assert got.flags.c_contiguous and (got.size == 0 or got.ctypes.data % ALIGN == 0)


def test_broken_files_name_the_problem(mixed_file, tmp_path):
    path, _ = mixed_file
    data = open(path, "rb").read()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-8])
    with pytest.raises(SafetensorsError, match="truncated"):
        SafetensorsFile(str(cut))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(SafetensorsError, match="header length"):
        SafetensorsFile(str(junk))
    bad = tmp_path / "bad.safetensors"
    header = json.dumps({"x": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}}).encode()
    bad.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(SafetensorsError, match="'x': bad header entry"):
        SafetensorsFile(str(bad))


def test_to_device_transposes_casts_and_adopts_the_buffer(mixed_file):
    path, tensors = mixed_file
    with SafetensorsFile(path) as f:
        a = f.get_tensor("f32")
    placed = to_device(a)
    if jax.default_backend() == "cpu":  # no copy: the jax Array uses the numpy buffer
        assert placed.unsafe_buffer_pointer() == a.ctypes.data
    np.testing.assert_array_equal(to_device(a, transpose=True), tensors["f32"].T)
    cast = to_device(a, jnp.bfloat16, transpose=True)
    assert cast.dtype == jnp.bfloat16 and cast.shape == (5, 7)
    np.testing.assert_array_equal(np.asarray(cast, np.float32), tensors["f32"].T.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_loading_takes_about_the_checkpoints_size(tmp_path):
    """Peak RSS growth of `from_pretrained` (fresh process, after JAX's one-time tracing set-up) stays
    within 1.3x the file: memory-mapped reads and a second copy per tensor made it ~2.2x."""
    from bench.common import hf_model

    size = dict(vocab_size=30522, dim=256, n_layers=2, n_heads=4, hidden_dim=1024, max_position_embeddings=512)
    hf_model("base", size, randomize=False).save_pretrained(tmp_path)
    file_mb = os.path.getsize(tmp_path / "model.safetensors") / 2**20
    code = textwrap.dedent(f"""
        import jax.numpy as jnp
        import distilbert_jax as dj
        from bench.processes import reset_peak_rss, vm_kib
        from distilbert_jax.weights import param_shapes
        jnp.zeros(1).block_until_ready()
        param_shapes(dj.build_model(dj.DistilBertConfig.from_json_file({str(tmp_path)!r}), "base"))  # tracing set-up
        reset_peak_rss()
        before = vm_kib("VmRSS")
        model, variables = dj.from_pretrained({str(tmp_path)!r}, "base")
        print((vm_kib("VmHWM") - before) / 1024)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    growth_mb = float(out.stdout.split()[-1])
    assert growth_mb <= 1.3 * file_mb, f"loading {file_mb:.0f} MB grew the peak RSS by {growth_mb:.0f} MB"
