"""SuperNet training: resume equals uninterrupted (sandwich rule on), distillation, the CLI, and further
training of an extracted sub-network through `distilbert_jax.train`."""

import json
import math

import jax
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.config import nas_config_from_dict
from distilbert_jax.nas.train import step_archs, train_supernet
from distilbert_jax.train import Checkpoints, ConfigError, enable_compile_cache, train
from distilbert_jax.train.config import tiny_config
from distilbert_jax.train.sources import make_sources

from ..killed_source import KillAfter, Killed

# smaller than the SuperNet tests' space: these tests compile whole training steps
TRAIN_SPACE = {"layer_num_space": [1, 2], "hidden_size_space": [32, 48], "hidden_step": 16, "head_num_space": [1, 2],
               "head_size": 16, "intermediate_size_space": [32, 64], "intermediate_step": 32}  # fmt: skip

enable_compile_cache()


def tiny_nas(out_dir, **changes):
    data = {"space": TRAIN_SPACE, "buckets": 1, "model": {"vocab_size": 100, "max_position_embeddings": 32},
            "total_steps": 5, "log_every": 1, "eval_batches": 1, "progress": False, "out_dir": str(out_dir),
            "data": {"source": "synthetic", "batch_size": 8, "seq_len": 16, "vocab_size": 100},
            "optim": {"learning_rate": 3e-3, "warmup_steps": 1}}  # fmt: skip
    data.update(changes)
    return nas_config_from_dict(data)


def test_resumed_sandwich_run_equals_uninterrupted(tmp_path):
    settings, cfg = tiny_nas(tmp_path / "full", sandwich=True, checkpoint_every=2)
    assert [str(a) for a in step_archs(settings, 0, 3)][:2] == [str(settings.space.largest()), str(settings.space.smallest())]
    full = train_supernet(settings, cfg)
    cfg = cfg.replace(out_dir=str(tmp_path / "killed"))
    with pytest.raises(Killed):
        train_supernet(settings, cfg, train_source=KillAfter(make_sources(cfg).train, 4))
    assert Checkpoints(tmp_path / "killed" / "checkpoints").latest_step() == 2
    resumed = train_supernet(settings, cfg)
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(full.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [r["loss"] for r in resumed.history["train"]] == [r["loss"] for r in full.history["train"][2:]]
    assert full.compilations == 1  # one bucket: every arch shares one program
    assert {"loss@smallest", "loss@largest"} <= set(full.final_eval)
    assert (tmp_path / "full" / "metrics.png").stat().st_size > 0 and (tmp_path / "full" / "tb").is_dir()


def test_distillation_objective_and_teacher_checks(tmp_path):
    teacher = dj.build_model(dj.small_config(vocab_size=100, dim=48, n_heads=3, max_position_embeddings=32), "masked_lm")
    dj.save_pretrained(tmp_path / "teacher", teacher, dj.init_params(teacher, 3))
    settings, cfg = tiny_nas(tmp_path / "run", objective="distill", teacher=str(tmp_path / "teacher"), total_steps=2)
    result = train_supernet(settings, cfg)
    last = result.history["train"][-1]
    assert all(math.isfinite(last[k]) and last[k] >= 0 for k in ("kd", "attn", "rel", "loss"))
    assert last["loss"] == pytest.approx(last["kd"] + last["attn"] + last["rel"], rel=1e-4)

    # any masked-LM directory the library loads can teach (a BERT one here); its vocabulary must match
    wrong = dj.build_model(dj.small_config(vocab_size=120, max_position_embeddings=32, model_type="bert",
                                           type_vocab_size=2), "masked_lm")  # fmt: skip
    dj.save_pretrained(tmp_path / "wrong", wrong, dj.init_params(wrong, 0))
    settings, cfg = tiny_nas(tmp_path / "run2", objective="distill", teacher=str(tmp_path / "wrong"))
    with pytest.raises(ConfigError, match="has vocab_size 120 but the SuperNet 100: distillation needs the same tokenizer"):
        train_supernet(settings, cfg)


def test_inplace_distillation_largest_teaches_the_others_in_the_same_step(tmp_path):
    settings, cfg = tiny_nas(tmp_path / "inplace", inplace_distill=True, random_archs=2, total_steps=3)
    archs = step_archs(settings, 0, 1)
    assert len(archs) == settings.archs_per_step == 3 and archs[0] == settings.space.largest()
    result = train_supernet(settings, cfg)
    rows = result.history["train"]
    assert all(math.isfinite(r["inplace_kd"]) and r["inplace_kd"] >= 0 and math.isfinite(r["loss"]) for r in rows)
    assert result.compilations == 1  # the largest's teaching forward is part of the one step program
    # with the sandwich rule: largest teaches smallest + random archs; with a teacher: the largest distils from it
    teacher = dj.build_model(dj.small_config(vocab_size=100, dim=48, n_heads=3, max_position_embeddings=32,
                                             model_type="bert", type_vocab_size=2), "masked_lm")  # fmt: skip
    dj.save_pretrained(tmp_path / "teacher", teacher, dj.init_params(teacher, 3))
    settings, cfg = tiny_nas(tmp_path / "both", inplace_distill=True, sandwich=True, random_archs=1, total_steps=2,
                             objective="distill", teacher=str(tmp_path / "teacher"))  # fmt: skip
    last = train_supernet(settings, cfg).history["train"][-1]
    assert all(math.isfinite(last[k]) and last[k] >= 0 for k in ("kd", "attn", "rel", "inplace_kd", "loss"))


def test_distillation_student_uses_the_teachers_tokenizer(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    _, cfg = tiny_nas(tmp_path / "run", objective="distill", teacher=str(tmp_path / "teacher"))
    assert cfg.tokenizer == str(tmp_path / "teacher")
    _, cfg = tiny_nas(tmp_path / "run", objective="distill", teacher=str(tmp_path / "teacher"), tokenizer=str(tmp_path))
    assert cfg.tokenizer == str(tmp_path)  # an explicit tokenizer wins
    _, cfg = tiny_nas(tmp_path / "run", objective="mlm", teacher=str(tmp_path / "teacher"))
    assert cfg.tokenizer is None


@pytest.mark.parametrize("changes, match", [
    ({"objective": "distill"}, "objective 'distill' needs 'teacher'"),
    ({"model": {"dim": 64}}, r"\['dim'\] are set by the search space"),
    ({"space": {"layer_num_space": [0, 3]}}, r"space: invalid search space: layer_num_space \[0, 3\] must satisfy"),
    ({"objective": "kd"}, "objective must be one of"),
    ({"inplace_distill": "yes"}, "inplace_distill must be true or false"),
])  # fmt: skip
def test_bad_nas_configs(tmp_path, changes, match):
    with pytest.raises(ConfigError, match=match):
        tiny_nas(tmp_path, **changes)


def test_cli_train_extract_then_further_training(tmp_path, capsys):
    config = tmp_path / "nas.json"
    settings, cfg = tiny_nas(tmp_path / "sn", total_steps=2)
    config.write_text(json.dumps({**cfg.to_dict(), "space": settings.space.to_dict(), "buckets": 1}))
    assert main(["train", "--config", str(config), "--set", "eval_batches=1"]) == 0
    assert "loss@largest" in capsys.readouterr().out
    arch = "{'sample_layer_num': 2, 'sample_num_attention_heads': [2, 2], 'sample_qkv_sizes': [32, 32], " \
           "'sample_hidden_size': 48, 'sample_intermediate_sizes': [64, 64]}"
    assert main(["extract", "--supernet", str(tmp_path / "sn" / "supernet"), "--arch", arch, "--out", str(tmp_path / "sub")]) == 0
    assert "qkv 32 != hidden 48" in capsys.readouterr().out
    bad = arch.replace("[2, 2]", "[2, 3]")
    assert main(["extract", "--supernet", str(tmp_path / "sn" / "supernet"), "--arch", bad, "--out", str(tmp_path / "x")]) == 2
    assert "differs between layers" in capsys.readouterr().err
    # further MLM training from the extracted sub-network (qkv != hidden), as `python -m distilbert_jax.train`
    further = train(tiny_config(init_from=str(tmp_path / "sub"), model={}, total_steps=2, out_dir=str(tmp_path / "ft"),
                                data={"vocab_size": 100}))
    assert further.model.config.qkv_dim == 32 and math.isfinite(further.final_eval["loss"])
    assert dj.from_pretrained(further.export_dir)[0].config == further.model.config
