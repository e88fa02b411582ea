"""Entity-level (strict IOB2) precision / recall / F1 equal the `seqeval` package's, and evaluation
reports them for token classification with IOB2 label names."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from distilbert_jax import HeadOutput
from distilbert_jax.train import Task
from distilbert_jax.train.config import TrainConfig
from distilbert_jax.train.entities import entity_scores, entity_sums, iob2_tags
from distilbert_jax.train.tasks import task_for

seqeval_metrics = pytest.importorskip("seqeval.metrics")
from seqeval.scheme import IOB2  # noqa: E402

NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
ID = {n: i for i, n in enumerate(NAMES)}
# (gold, predicted) word tags: exact hits, wrong ends, wrong types, I- after O (no entity in strict mode),
# B-X I-Y, adjacent entities, entities at the end of the sentence, all-O
CASES = [
    ("B-PER I-PER O B-LOC", "B-PER I-PER O B-LOC"),
    ("B-PER I-PER O B-LOC", "B-PER O O B-LOC"),
    ("B-PER I-PER I-PER", "B-PER I-PER I-LOC"),
    ("O I-PER I-PER O", "O I-PER I-PER O"),
    ("O I-PER I-PER O", "B-PER I-PER I-PER O"),
    ("B-LOC I-PER O", "B-LOC I-PER O"),
    ("B-LOC B-LOC I-LOC", "B-LOC I-LOC I-LOC"),
    ("B-ORG B-PER B-LOC", "B-ORG B-PER B-LOC"),
    ("O O B-ORG", "O O B-PER"),
    ("O O O", "B-ORG O O"),
    ("B-PER", "O"),
    ("I-LOC B-LOC I-LOC O B-PER", "B-LOC B-LOC I-LOC O B-PER"),
]


def _reference(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    kw = dict(mode="strict", scheme=IOB2, zero_division=0)
    return {"entity_precision": seqeval_metrics.precision_score(gold, pred, **kw),
            "entity_recall": seqeval_metrics.recall_score(gold, pred, **kw),
            "entity_f1": seqeval_metrics.f1_score(gold, pred, **kw)}  # fmt: skip


@functools.partial(jax.jit, static_argnums=2)
def _scores(pred_ids, labels, tags):
    s = entity_sums(pred_ids, labels, tags)
    return entity_scores(s["entity_tp"], s["entity_pred"], s["entity_gold"])


def _ours(pred_ids: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    out = _scores(pred_ids, labels, iob2_tags(NAMES))
    return {k: float(out[k]) for k in ("entity_precision", "entity_recall", "entity_f1")}  # seqeval's order


def _batch(cases, width=14, seed=0):
    """Word tags laid out as a tokenizer does: [CLS] at 0, -100 on some later word pieces, padding."""
    rng = np.random.default_rng(seed)
    labels = np.full((len(cases), width), -100)
    pred = rng.integers(0, len(NAMES), (len(cases), width))  # anything at ignored positions
    for row, (g, p) in enumerate(cases):
        col = 1
        for gt, pt in zip(g.split(), p.split()):
            labels[row, col], pred[row, col] = ID[gt], ID[pt]
            col += 1 + int(rng.integers(0, 2))  # sometimes a second word piece, labelled -100
    return pred, labels


def test_hand_made_cases_equal_seqeval():
    pred, labels = _batch(CASES)
    for i, (g, p) in enumerate(CASES):  # each case on its own, then all together
        ours, ref = _ours(pred[i : i + 1], labels[i : i + 1]), _reference([g.split()], [p.split()])
        np.testing.assert_allclose(list(ours.values()), list(ref.values()), atol=1e-6, err_msg=f"{g} vs {p}")
    ref = _reference([g.split() for g, _ in CASES], [p.split() for _, p in CASES])
    np.testing.assert_allclose(list(_ours(pred, labels).values()), list(ref.values()), atol=1e-6)


def test_random_tags_equal_seqeval():
    rng = np.random.default_rng(1)
    gold = rng.choice(NAMES, (200, 9))
    pred = np.where(rng.random(gold.shape) < 0.6, gold, rng.choice(NAMES, gold.shape))
    cases = [(" ".join(g), " ".join(p)) for g, p in zip(gold, pred)]
    ours = _ours(*_batch(cases, width=20, seed=2))
    ref = _reference([list(g) for g in gold], [list(p) for p in pred])
    np.testing.assert_allclose(list(ours.values()), list(ref.values()), atol=1e-6)
    assert 0.2 < ours["entity_f1"] < 0.9


def test_evaluation_reports_entity_scores_for_iob2_labels():
    cfg = TrainConfig.from_dict({"task": "token-classify", "data": {"source": "synthetic"}})
    task = task_for(cfg, len(NAMES), NAMES)
    assert task.entity_tags == iob2_tags(NAMES) and hash(task)
    assert task_for(cfg, 3, ["CODE", "NUM", "O"]).entity_tags is None  # not IOB2: token scores only
    pred, labels = _batch(CASES)
    logits = jnp.asarray(np.eye(len(NAMES))[pred] * 5.0)  # predicts `pred`
    out = HeadOutput(logits=logits, last_hidden_state=jnp.zeros(labels.shape + (2,)))
    batch = {"labels": jnp.asarray(labels), "attention_mask": jnp.ones(labels.shape, jnp.int32)}
    evaluate = jax.jit(lambda o, b, t: t.metrics(t.sums(o, b), t.denominators(b)), static_argnums=2)
    metrics = evaluate(out, batch, task)
    ref = _reference([g.split() for g, _ in CASES], [p.split() for _, p in CASES])
    for key, value in ref.items():
        assert float(metrics[key]) == pytest.approx(value, abs=1e-6)
    assert "f1" in metrics and "accuracy" in metrics
    plain = Task("token-classify", len(NAMES))
    assert "entity_f1" not in evaluate(out, batch, plain)


def test_iob2_file_gives_entity_task(tmp_path):
    """A token-classification file with IOB2 tags: its data setup carries the tag names (so `train`
    evaluates entity scores) and its tokenizer trains on the words (it used to look for a 'text' field)."""
    import json

    from distilbert_jax.train.config import tiny_config
    from distilbert_jax.train.sources import make_sources

    rows = [{"tokens": ["meet", f"ada{i}", "lovelace", "in", "london", "today"],
             "tags": ["O", "B-PER", "I-PER", "O", "B-LOC", "O"]} for i in range(16)]  # fmt: skip
    path = tmp_path / "ner.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config("token-classify", total_steps=2, out_dir=str(tmp_path / "run"),
                      data={"source": str(path), "vocab_size": 80, "seq_len": 16, "batch_size": 8})  # fmt: skip
    data = make_sources(cfg)
    assert set(data.label_names) == {"O", "B-PER", "I-PER", "B-LOC"}
    assert data.tokenizer.backend.token_to_id("london") is not None
    task = task_for(cfg, data.num_labels, data.label_names)
    assert task.entity_tags == iob2_tags(data.label_names)
