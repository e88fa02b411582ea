"""The `mkl` GEMM back end: MKL GEMMs as XLA FFI calls (distilbert_jax.mkl_gemm), and the model on them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from distilbert_jax import mkl_gemm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_mkl = pytest.mark.skipif(not mkl_gemm.available()[0], reason=f"MKL back end unavailable: {mkl_gemm.available()[1]}")


@needs_mkl
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)])
def test_dot_matches_numpy_for_every_transpose(dtype, ta, tb):
    import jax
    import jax.numpy as jnp

    mkl_gemm.load()
    rng = np.random.default_rng(0)
    m, k, n = 37, 70, 53  # odd sizes: no block of the kernel divides them
    a = jnp.asarray(rng.standard_normal((k, m) if ta else (m, k)), dtype)
    b = jnp.asarray(rng.standard_normal((n, k) if tb else (k, n)), dtype)
    out = jax.jit(lambda a, b: mkl_gemm.dot(a, b, ta, tb))(a, b)
    ref = np.asarray(a, np.float64).T if ta else np.asarray(a, np.float64)
    ref = ref @ (np.asarray(b, np.float64).T if tb else np.asarray(b, np.float64))
    assert out.dtype == jnp.float32 and out.shape == (m, n)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-4, atol=1e-4)  # bf16 inputs are exact in f32 products
    # under vmap: a loop of GEMMs, the same result
    batched = jax.vmap(lambda a: mkl_gemm.dot(a, b, ta, tb))(jnp.stack([a, 2 * a]))
    np.testing.assert_allclose(np.asarray(batched[1]), 2 * np.asarray(out), rtol=1e-5, atol=1e-4)


@needs_mkl
def test_dot_is_right_after_pytorch_loaded_its_openmp():
    """With MKL's OpenMP layer, GEMMs returned garbage once torch (libgomp) was loaded first (as in a parity run
    or a test process); MKL now runs sequentially, split over XLA's threads."""
    code = (
        "import torch, numpy as np, jax, jax.numpy as jnp\n"
        "from distilbert_jax import mkl_gemm\n"
        "mkl_gemm.load()\n"
        "rng = np.random.default_rng(0)\n"
        "for dt in (jnp.float32, jnp.bfloat16):\n"
        "    for m, k, n in ((64, 768, 768), (64, 768, 3000), (300, 256, 200)):\n"
        "        a, b = (jnp.asarray(rng.standard_normal(s), dt) for s in ((m, k), (n, k)))\n"
        "        out = jax.jit(lambda a, b: mkl_gemm.dot(a, b, transpose_b=True))(a, b)\n"
        "        ref = np.asarray(a, np.float64) @ np.asarray(b, np.float64).T\n"
        "        assert np.abs(np.asarray(out) - ref).max() < 1e-3, (dt, m, k, n, np.abs(np.asarray(out) - ref).max())\n"
        "print('ok')\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.stdout + out.stderr)[-3000:]


@needs_mkl
def test_dot_rejects_bad_operands():
    import jax.numpy as jnp

    mkl_gemm.load()
    with pytest.raises(ValueError, match="contracting dimensions differ: 4 vs 5"):
        mkl_gemm.dot(jnp.ones((3, 4), jnp.float32), jnp.ones((5, 6), jnp.float32))
    with pytest.raises(ValueError, match="two 2-D bf16 or float32 arrays of one dtype"):
        mkl_gemm.dot(jnp.ones((3, 4), jnp.float16), jnp.ones((4, 6), jnp.float16))


def test_missing_mkl_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(mkl_gemm.LIB_ENV, str(tmp_path / "libmkl_rt.so.3"))
    assert mkl_gemm.find_mkl() == tmp_path / "libmkl_rt.so.3"
    if not mkl_gemm.loaded():  # (once loaded in this process, it stays available)
        ok, why = mkl_gemm.available()
        assert not ok and mkl_gemm.LIB_ENV in why
        with pytest.raises(mkl_gemm.MklUnavailable, match="does not exist"):
            mkl_gemm.load()


def test_explicit_mkl_without_mkl_is_an_error_in_a_fresh_process(tmp_path):
    code = (
        "import distilbert_jax as dj\n"
        "from distilbert_jax.mkl_gemm import MklUnavailable, available\n"
        "ok, why = available()\n"
        "assert not ok and 'DISTILBERT_JAX_MKL_LIB' in why, why\n"
        "try:\n"
        "    dj.configure_cpu('bf16', backend='mkl')\n"
        "except MklUnavailable as e:\n"
        "    print('refused:', e)\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, DISTILBERT_JAX_MKL_LIB=str(tmp_path / "none.so"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "refused: MKL library" in out.stdout and "does not exist" in out.stdout, out.stderr


# In a fresh process (the back end is a per-process choice): the small model's bf16 and fp32 forward, and a
# bf16 and an fp32 gradient, with the model's matmuls on MKL equal XLA's; the compiled HLO calls MKL.
_MODEL_CHECK = r"""
import numpy as np, distilbert_jax as dj
from distilbert_jax import gemm
choice = dj.configure_cpu("bf16", backend="mkl")
assert choice.applied and choice.backend == "mkl", choice
import jax, jax.numpy as jnp
config = dj.small_config(dim=64, n_heads=4, hidden_dim=128)
ids = jnp.asarray(np.random.default_rng(0).integers(5, 1000, (3, 24)), jnp.int32)
mask = jnp.ones_like(ids).at[2, 17:].set(0)
def run(dtype):
    model = dj.DistilBertModel(config, dtype=dtype)
    params = model.init(jax.random.PRNGKey(0), ids, mask)
    fwd = jax.jit(lambda p: model.apply(p, ids, mask).last_hidden_state)
    loss = jax.jit(jax.grad(lambda p: (model.apply(p, ids, mask).last_hidden_state ** 2).mean()))
    return fwd.lower(params).compile().as_text(), np.asarray(fwd(params)), jax.tree.leaves(loss(params))
for dtype, tol in ((jnp.bfloat16, 2e-2), (jnp.float32, 1e-4)):
    gemm._LIBRARY["dtypes"] = (jnp.dtype(dtype).name,)
    hlo, out, grads = run(dtype)
    assert "distilbert_jax_mkl_gemm" in hlo, "the forward does not call MKL"
    gemm._LIBRARY.clear()  # the same model on XLA's dots (a fresh trace)
    hlo_ref, ref, grads_ref = run(dtype)
    assert "distilbert_jax_mkl_gemm" not in hlo_ref
    assert np.abs(out - ref).max() < tol, (dtype, np.abs(out - ref).max())
    worst = max(float(np.abs(g - r).max() / (np.abs(r).max() + 1e-12)) for g, r in zip(grads, grads_ref))
    assert worst < tol, (dtype, worst)
    print(jnp.dtype(dtype).name, "max diff", float(np.abs(out - ref).max()), "grad rel", worst)
print("ok")
"""


@needs_mkl
def test_model_forward_and_gradients_on_mkl_equal_xla():
    env = {k: v for k, v in os.environ.items() if k != "DISTILBERT_JAX_GEMM"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", _MODEL_CHECK], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (out.stdout + out.stderr)[-3000:]


@needs_mkl
def test_the_rule_routes_fp32_to_mkl_and_leaves_bf16_on_xla_for_an_amx_xeon():
    from distilbert_jax import gemm
    from distilbert_jax.cpu import CpuInfo

    xeon = CpuInfo("GenuineIntel", "Intel(R) Xeon(R)", frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}), 2)
    saved = dict(gemm._LIBRARY)
    env = os.environ.pop(gemm.ENV_VAR, None)
    try:
        assert gemm.configure_cpu("fp32", cpu=xeon).backend == "mkl"
        assert gemm.library_dot("float32") and not gemm.library_dot("bfloat16")
        assert gemm.configure_cpu("bf16", cpu=xeon).backend == "xla"  # a later call replaces the choice
        assert not gemm.library_dot("float32") and not gemm.library_dot("bfloat16")
        assert gemm.configure_cpu("bf16", backend="mkl").backend == "mkl"  # explicit: both dtypes
        assert gemm.library_dot("float32") and gemm.library_dot("bfloat16")
    finally:
        gemm._LIBRARY.clear()
        gemm._LIBRARY.update(saved)
        if env is not None:
            os.environ[gemm.ENV_VAR] = env


@needs_mkl
def test_an_export_for_iree_has_no_mkl_calls_where_mkl_is_configured():
    pytest.importorskip("iree.compiler")
    from distilbert_jax import gemm
    from rl.mlir.jax_model import ModelCase, export

    saved = dict(gemm._LIBRARY)
    try:
        gemm._LIBRARY["dtypes"] = ("float32", "bfloat16")  # as after configure_cpu chose mkl
        exported = export(ModelCase("tiny", batch=1))
        assert "distilbert_jax_mkl" not in exported.text and "stablehlo.dot_general" in exported.text
        assert gemm._LIBRARY["dtypes"] == ("float32", "bfloat16")  # restored after the export
    finally:
        gemm._LIBRARY.clear()
        gemm._LIBRARY.update(saved)
