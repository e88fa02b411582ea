"""End-to-end runs on tiny configs: resume equals an uninterrupted run, NaN stops the run keeping the
last good checkpoint, distillation, HF export, the CLI and the loaders' default corpus."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.train import Checkpoints, ConfigError, TrainingDiverged, enable_compile_cache, train
from distilbert_jax.train.config import TINY_MODEL, tiny_config
from distilbert_jax.train.sources import make_sources

from ..killed_source import KillAfter, Killed

enable_compile_cache()
ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-7)


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path):
    cfg = tiny_config(total_steps=7, checkpoint_every=3, keep_checkpoints=2, out_dir=str(tmp_path / "full"))
    full = train(cfg)

    cfg = cfg.replace(out_dir=str(tmp_path / "killed"))
    with pytest.raises(Killed):
        train(cfg, train_source=KillAfter(make_sources(cfg).train, 5))
    assert Checkpoints(tmp_path / "killed" / "checkpoints").latest_step() == 3
    resumed = train(cfg)

    _assert_trees_equal(resumed.state.params, full.state.params)
    _assert_trees_equal(resumed.state.opt_state, full.state.opt_state)
    np.testing.assert_array_equal(resumed.state.rng, full.state.rng)
    assert int(resumed.state.step) == 7
    assert [r["loss"] for r in resumed.history["train"]] == [r["loss"] for r in full.history["train"][3:]]
    assert Checkpoints(tmp_path / "killed" / "checkpoints").all_steps() == [6, 7]  # keep-last-2

    # outputs: HF export (same params), plot, TensorBoard, metrics
    model, variables = dj.from_pretrained(full.export_dir)
    _assert_trees_equal(variables["params"], jax.device_get(full.state.params))
    assert os.path.getsize(full.plot_path) > 0 and os.listdir(tmp_path / "full" / "tb")
    assert {"loss", "accuracy", "perplexity"} <= set(full.final_eval)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(total_steps=6, checkpoint_every=1, out_dir=str(tmp_path),
                      optim={"learning_rate": 1e30, "warmup_steps": 0, "max_grad_norm": None})  # fmt: skip
    with pytest.raises(TrainingDiverged, match=r"diverged at step (\d+) .*last good checkpoint is step") as e:
        train(cfg)
    bad_step = int(e.value.args[0].split("diverged at step ")[1].split()[0])
    ckpt = Checkpoints(tmp_path / "checkpoints")
    assert ckpt.latest_step() == bad_step - 1
    restored = ckpt.manager.restore(ckpt.latest_step())
    leaves = jax.tree.leaves(restored["state"]["params"])
    assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves)


def _save_teacher(path, **overrides):
    config = dj.DistilBertConfig().replace(**{**TINY_MODEL, **overrides})
    model = dj.build_model(config, "masked_lm")
    dj.save_pretrained(path, model, dj.init_params(model, 7))
    return str(path)


def test_distillation_run(tmp_path):
    teacher = _save_teacher(tmp_path / "teacher", n_layers=3)
    cfg = tiny_config("distill", total_steps=3, out_dir=str(tmp_path / "run"),
                      distill={"teacher": teacher, "task": "mlm", "temperature": 2.0, "alpha": 0.5, "cosine_weight": 1.0})  # fmt: skip
    result = train(cfg)
    assert {"loss", "kd", "ce", "cos", "perplexity"} <= set(result.final_eval)
    assert all(math.isfinite(v) for v in result.final_eval.values())
    assert dj.from_pretrained(result.export_dir)[0].config.n_layers == 2


def test_teacher_student_mismatch_errors(tmp_path):
    teacher = _save_teacher(tmp_path / "t_vocab", vocab_size=300)
    cfg = tiny_config("distill", distill={"teacher": teacher}, out_dir=str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="vocabulary sizes differ"):
        train(cfg)
    teacher = _save_teacher(tmp_path / "t_dim", dim=48)
    cfg = tiny_config("distill", distill={"teacher": teacher, "cosine_weight": 1.0}, out_dir=str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="equal hidden sizes"):
        train(cfg)
    cfg = tiny_config("distill", distill={"teacher": str(tmp_path / "nope")}, out_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="does not exist"):
        train(cfg)


def test_cli_smoke_run_token_classification(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_config("token-classify", total_steps=3).to_dict()))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "distilbert_jax.train", "token-classify", "--config", str(path),
                           "--out-dir", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("\nmetric "):]  # the closing summary table
    assert "final eval" in table.splitlines()[1] and any(line.startswith("f1 ") for line in table.splitlines())
    assert os.path.isfile(out / "model" / "config.json") and os.path.isfile(out / "metrics.png")


def test_default_corpus_batches_fit_the_model():
    cfg = tiny_config(model={}, data={"source": "default", "seq_len": 32, "vocab_size": 4000, "batch_size": 4})
    data = make_sources(cfg)
    batch = next(data.train)
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 32)
    assert data.vocab_size == data.tokenizer.vocab_size and batch["input_ids"].max() < data.vocab_size
    assert ((batch["labels"] != -100).sum()) > 0
    classify = make_sources(tiny_config("classify", model={}, data={"source": "default", "seq_len": 32}))
    assert classify.num_labels == 8


def test_question_answering_run(tmp_path):
    result = train(tiny_config("qa", total_steps=2, out_dir=str(tmp_path)))
    assert {"loss", "start_accuracy", "end_accuracy", "exact_match"} <= set(result.final_eval)
    assert dj.from_pretrained(result.export_dir)[0].config.num_labels == 2


def test_classification_from_a_jsonl_file(tmp_path):
    rows = [{"text": f"{'alpha beta' if i % 2 else 'gamma delta'} sample number {i}", "label": ["a", "b"][i % 2]}
            for i in range(40)]  # fmt: skip
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config("classify", model={**TINY_MODEL, "vocab_size": 300}, total_steps=2, out_dir=str(tmp_path / "run"),
                      data={"source": str(path), "vocab_size": 120, "seq_len": 16, "batch_size": 8})  # fmt: skip
    result = train(cfg)
    assert result.model.config.num_labels == 2 and {"accuracy", "f1"} <= set(result.final_eval)
    assert os.path.isfile(tmp_path / "run" / "model" / "tokenizer.json") or os.path.isfile(
        tmp_path / "run" / "model" / "vocab.txt"
    )
    with pytest.raises(ConfigError, match="is not 'default', 'synthetic' or an existing file"):
        train(cfg.replace(data={"source": str(tmp_path / "missing.jsonl")}))


def test_evaluation_sees_every_validation_example(tmp_path):
    """The eval iterator keeps the last partial batch (padded rows carry label -100), so 21 examples
    at batch 8 give 21 labels, not 16."""
    from distilbert_jax.train.corpus import loader_sources

    rows = [{"text": f"sample {i} {'up' if i % 2 else 'down'}", "label": i % 2} for i in range(21)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config("classify", out_dir=str(tmp_path / "run"),
                      data={"source": str(path), "vocab_size": 80, "seq_len": 16, "batch_size": 8})  # fmt: skip
    labels = [np.asarray(b["labels"]) for b in loader_sources(cfg).make_eval()]
    assert sum(int((l != -100).sum()) for l in labels) == 21 and len(labels) == 3


def test_question_answering_from_a_squad_style_file(tmp_path):
    rows = []
    for i in range(24):
        context = f"record {i} says the capital of land {i} is city{i % 5} and nothing else matters here."
        answer = f"city{i % 5}"
        rows.append({"question": f"what is the capital of land {i}?", "context": context,
                     "answers": {"text": [answer], "answer_start": [context.index(answer)]}})  # fmt: skip
    path = tmp_path / "squad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config("qa", model={**TINY_MODEL, "vocab_size": 300}, total_steps=3, out_dir=str(tmp_path / "run"),
                      data={"source": str(path), "text_field": "context", "vocab_size": 150, "seq_len": 48,
                            "batch_size": 8})  # fmt: skip
    result = train(cfg)
    assert {"loss", "exact_match"} <= set(result.final_eval) and math.isfinite(result.final_eval["loss"])
    model, variables = dj.from_pretrained(result.export_dir)
    tok = dj.Tokenizer.from_pretrained(result.export_dir)
    [answer] = dj.answer_questions(model, variables, tok, [rows[0]["question"]], [rows[0]["context"]])
    assert answer is not None and answer.text in rows[0]["context"]
    with pytest.raises(ConfigError, match="default corpus has no question-answering data"):
        train(tiny_config("qa", out_dir=str(tmp_path / "run2"), data={"source": "default"}))


def _save_bert_teacher(path, vocab_size=200):
    """A random `transformers` BertForMaskedLM (3 layers × 32, vocab of the tiny student) saved to `path`."""
    from bench.common import hf_model

    size = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64)  # fmt: skip
    hf_model("masked_lm", size, seed=3, arch="bert").save_pretrained(path)
    return str(path)


def test_bert_teacher_distils_into_distilbert_through_cli(tmp_path, capsys):
    from distilbert_jax.train.cli import main

    teacher = _save_bert_teacher(tmp_path / "bert_teacher")
    config = tmp_path / "distill.json"
    config.write_text(json.dumps(tiny_config("distill", total_steps=3, distill={
        "teacher": teacher, "task": "mlm", "cosine_weight": 1.0}).to_dict()))  # fmt: skip
    assert main(["distill", "--config", str(config), "--out-dir", str(tmp_path / "run"), "--compile-cache", "off"]) == 0
    out = capsys.readouterr().out
    assert "kd" in out and "cos" in out and "model exported to" in out
    student, _ = dj.from_pretrained(tmp_path / "run" / "model")
    assert student.config.model_type == "distilbert" and student.config.n_layers == 2


def test_bert_teacher_vocabulary_must_match(tmp_path, vocab_dir):
    from distilbert_jax.train.models import load_teacher

    cfg = tiny_config("distill", distill={"teacher": _save_bert_teacher(tmp_path / "t300", vocab_size=300)},
                      out_dir=str(tmp_path / "a"))  # fmt: skip
    with pytest.raises(ConfigError, match=r"vocabulary sizes differ \(teacher 300, student 200\)"):
        train(cfg)
    # same size, other tokens: the teacher's tokenizer files are compared with the run's tokenizer
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    teacher_dir = _save_bert_teacher(tmp_path / "t_tok", vocab_size=tok.vocab_size)
    vocab = open(os.path.join(vocab_dir, "vocab.txt"), encoding="utf-8").read().splitlines()
    with open(os.path.join(teacher_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab[:-1] + ["zzzunseen"]) + "\n")
    cfg = cfg.replace(distill={"teacher": teacher_dir}, model=dict(TINY_MODEL, vocab_size=tok.vocab_size))
    student = dj.build_model(dj.DistilBertConfig().replace(**cfg.model), "masked_lm")
    with pytest.raises(ConfigError, match=r"differ in 2 tokens \(e.g. .*'zzzunseen'.*set `tokenizer` to the teacher"):
        load_teacher(cfg, student, tok)
    load_teacher(cfg, student, dj.Tokenizer.from_pretrained(teacher_dir))  # the teacher's own vocabulary fits
