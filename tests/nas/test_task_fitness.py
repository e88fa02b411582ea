"""The search's task fitness: the task SuperNet's classifier at an arch equals a standalone DistilBERT
sequence classifier built from the extracted encoder and the sliced head; the search split partitions the
module task's training split by docstring and never touches its evaluation split; a tiny task SuperNet
trains, early-stops, reloads and drives `search --task-fitness`; bad settings are refused by name."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.nas import SearchSpace, SuperNet
from distilbert_jax.nas.candidates import CandidateSet, write_candidates
from distilbert_jax.nas.cli import main
from distilbert_jax.nas.io import save_supernet
from distilbert_jax.nas.pipeline import PipelineConfig
from distilbert_jax.nas.search import search
from distilbert_jax.nas.space import parse_arch
from distilbert_jax.nas.supernet import ArchArrays
from distilbert_jax.nas.task_fitness import (TaskFitness, TaskFitnessConfig, TaskFitnessError, init_head, task_logits,
                                             train_task_supernet)
from distilbert_jax.train.config import ConfigError

from .conftest import TINY_SPACE, noisy


@pytest.mark.parametrize("arch", ["L2_H48_A2_Q32_F64", "L3_H64_A4_Q64_F128", "L1_H32_A1_Q16_F32"])
def test_task_logits_equal_the_standalone_classifier(tiny_supernet, arch):
    sn, params = tiny_supernet
    a = sn.space.check(parse_arch(arch))
    head = noisy(init_head(jax.random.PRNGKey(1), sn.config().dim, 5), seed=3)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 100, (3, 12)), jnp.int32)
    mask = jnp.ones((3, 12), jnp.int32).at[1, 8:].set(0)
    got = task_logits(sn, {"encoder": params, "head": head}, ArchArrays.of(a), sn.bucket(a), ids, mask)
    _, mlm = sn.extract(params, a)
    h = a.hidden
    model = dj.build_model(sn.config(a).replace(num_labels=5), "sequence_classification")
    variables = {"params": {"distilbert": mlm["params"]["distilbert"],
                            "pre_classifier": {"kernel": head["pre_classifier"]["kernel"][:h, :h],
                                               "bias": head["pre_classifier"]["bias"][:h]},
                            "classifier": {"kernel": head["classifier"]["kernel"][:h], "bias": head["classifier"]["bias"]}}}
    want = model.apply(variables, ids, mask).logits
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)


def test_search_split_partitions_the_training_split_only():
    import loaders
    from loaders.module_task import search_split

    task = loaders.module_task(16)
    paths = search_split(task)
    read = lambda p: [json.loads(line) for line in open(p, encoding="utf-8")]  # noqa: E731
    train, valid = read(task.path("train")), read(task.path("valid"))
    parts = {k: read(p) for k, p in paths.items()}
    assert len(parts["search_train"]) + len(parts["search_valid"]) == len(train)
    assert 0.15 < len(parts["search_valid"]) / len(train) < 0.35
    # a partition in training-file order: merging the two by position gives the training split back
    texts = [r["text"] for r in train]
    where = {t: i for i, t in enumerate(texts)}
    for rows in parts.values():
        idx = [where[r["text"]] for r in rows]
        assert idx == sorted(idx)
    assert sorted(where[r["text"]] for rows in parts.values() for r in rows) == list(range(len(train)))
    assert not {r["text"] for rows in parts.values() for r in rows} & {r["text"] for r in valid}
    assert search_split(task) == paths  # opened, not rebuilt


@pytest.fixture(scope="module")
def tokenized_supernet(tmp_path_factory):
    """A tiny SuperNet directory with a 120-token WordPiece tokenizer of the module task's sentences."""
    import loaders

    root = tmp_path_factory.mktemp("task_sn")
    task = loaders.module_task(16)
    tok = loaders.build_tokenizer([task.path("train")], root / "tok", vocab_size=120)
    sn = SuperNet(SearchSpace.from_dict(TINY_SPACE), dj.small_config(vocab_size=tok.vocab_size, max_position_embeddings=32), 1)
    save_supernet(root / "sn", sn, sn.init(0), tok)
    return root / "sn", sn


def test_train_reload_and_search_by_task_fitness(tokenized_supernet, tmp_path, capsys):
    sn_dir, sn = tokenized_supernet
    archs = tuple(sn.space.check(parse_arch(a)) for a in ("L1_H32_A1_Q16_F32", "L2_H48_A2_Q32_F64", "L2_H64_A2_Q32_F64"))
    cands = CandidateSet(archs, np.ones(len(archs)), {"constraint": "1ms", "target_ms": 1.0, "window_ms": [0.85, 1.1],
                                                      "reference_ms": 10.0, "space": sn.space.to_dict()})  # fmt: skip
    cfg = TaskFitnessConfig(steps=4, eval_every=2, eval_archs=2, batch_size=8, seq_len=16)
    rec = train_task_supernet(str(sn_dir), cands, "modules16", str(tmp_path / "tf"), cfg, log=lambda *_: None)
    meta = json.loads((tmp_path / "tf" / "task_fitness.json").read_text())
    assert [h["step"] for h in meta["history"]] == [2, 4] and rec["best_step"] in (0, 2, 4)
    assert len(meta["watched"]) == 2 and meta["candidates"] == 3
    fit = TaskFitness(tmp_path / "tf")
    m = fit.metrics(archs[1])
    assert np.isfinite(m["loss"]) and 0 <= m["accuracy"] <= 1 and fit.fitness(archs[1]) == pytest.approx(1 - m["accuracy"])
    assert fit.examples > 500  # the whole search-validation split
    best_step = [h for h in meta["history"] if h["step"] == rec["best_step"]]
    if best_step:  # the kept params are those of the highest mean accuracy over the watched archs
        watched = [parse_arch(a) for a in meta["watched"]]
        assert np.mean([fit.metrics(a)["accuracy"] for a in watched]) == pytest.approx(best_step[0]["valid_accuracy"])
        assert best_step[0]["valid_accuracy"] == max(h["valid_accuracy"] for h in meta["history"])
    # the search takes it as its fitness: the best arch is the one of lowest task error
    result = search("random", cands, fit.fitness, budget=3, seed=0, space=sn.space)
    assert fit.fitness(result.best.arch) == min(map(fit.fitness, archs))
    # the command line: train, then a table of the first candidates
    write_candidates(tmp_path / "cands.jsonl", cands)
    assert main(["task-supernet", "--supernet", str(sn_dir), "--candidates", str(tmp_path / "cands.jsonl"), "--out",
                 str(tmp_path / "cli"), "--set", "steps=2", "--set", "eval_every=1", "--set", "batch_size=8",
                 "--set", "seq_len=16"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "search-validation split" in out and "L1_H32_A1_Q16_F32" in out
    assert main(["task-supernet", "--supernet", str(sn_dir), "--candidates", str(tmp_path / "cands.jsonl"), "--out",
                 str(tmp_path / "bad"), "--set", "steps=0"]) == 2  # fmt: skip
    assert "steps must be >= 1" in capsys.readouterr().err


def test_bad_task_fitness_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="search_fitness 'task' needs a module task"):
        PipelineConfig(search_fitness="task", task="packages")
    with pytest.raises(ConfigError, match="search_fitness must be one of"):
        PipelineConfig(search_fitness="accuracy")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) in 'task_fitness_set': \['stpes'\]"):
        PipelineConfig(search_fitness="task", task="modules16", task_fitness_set={"stpes": 5})
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        PipelineConfig(search_fitness="task", task="modules16", task_fitness_set={"steps": 0})
    with pytest.raises(TaskFitnessError, match="not a task-fitness directory: no task_fitness.json"):
        TaskFitness(tmp_path)
