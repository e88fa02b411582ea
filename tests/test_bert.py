"""BERT-family checkpoints in the same encoder code: parity per head and depth with token types, save ->
`transformers` reload, key variants (prefix, gamma/beta, cls.predictions.*, no pooler), refused configs,
token_type_ids through the tokenizer."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import distilbert_jax as dj
from bench import parity
from bench.common import hf_class_name, random_inputs, random_token_types

HEADS = list(dj.HEADS)


def _inputs(head, seed=1, batch=2, seq_len=16):
    ids, mask = random_inputs(batch, seq_len, 1000, seed=seed, choices=3 if head == "multiple_choice" else None)
    return ids, mask, random_token_types(mask, seed)


def _ours(model, variables, ids, mask, types, head):
    out = model.apply(variables, jnp.asarray(ids), jnp.asarray(mask), token_type_ids=jnp.asarray(types))
    if head == "question_answering":
        return np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)])
    return np.asarray(out.last_hidden_state if head == "base" else out.logits)


def _theirs(hf, ids, mask, types, head):
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                 token_type_ids=torch.from_numpy(types.astype(np.int64)))  # fmt: skip
    if head == "question_answering":
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()])
    return out.last_hidden_state.numpy() if head == "base" else out.logits.numpy()


@pytest.mark.parametrize("head", HEADS)
def test_bert_head_parity_every_depth_and_reload(hf_dir, tmp_path, head):
    path, hf = hf_dir(head, arch="bert")
    model, variables = dj.from_pretrained(path)  # head and architecture from config.json
    assert model.config.is_bert and type(model) is dj.HEADS[head][0]
    ids, mask, types = _inputs(head)
    results = parity.compare(hf, model, variables, ids, mask, head, types)
    names = [name for name, _, _ in results]
    assert "hidden[embeddings]" in names and "hidden[layer 2]" in names
    assert ("pooler_output" in names) if head == "base" else any("logits" in n for n in names)
    for name, diff, scale in results:
        assert scale > 1e-3, name
        assert diff <= 1e-4, (head, name, diff)
    # save -> transformers' BertFor… (and the Auto class) reload with the same outputs
    out = tmp_path / "out"
    dj.save_pretrained(out, model, variables)
    assert transformers.AutoConfig.from_pretrained(out).architectures == [hf_class_name(head, "bert")]
    auto = transformers.AutoModel if head == "base" else getattr(transformers, hf_class_name(head, "bert"))
    reloaded = auto.from_pretrained(out, attn_implementation="eager").eval()
    np.testing.assert_allclose(_theirs(reloaded, ids, mask, types, head), _ours(model, variables, ids, mask, types, head),
                               atol=1e-4)  # fmt: skip
    model2, variables2 = dj.from_pretrained(out)
    np.testing.assert_array_equal(_ours(model2, variables2, ids, mask, types, head),
                                  _ours(model, variables, ids, mask, types, head))  # fmt: skip


def test_bert_config_round_trip_and_refusals():
    hf = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=48, layer_norm_eps=1e-7, type_vocab_size=3, classifier_dropout=0.3)  # fmt: skip
    config = dj.DistilBertConfig.from_hf(hf.to_dict())
    assert (config.model_type, config.dim, config.n_layers, config.hidden_dim, config.type_vocab_size) == ("bert", 32, 2, 48, 3)
    assert (config.layer_norm_eps, config.classifier_dropout) == (1e-7, 0.3)
    back = transformers.BertConfig(**config.to_hf())
    for name in ("hidden_size", "num_hidden_layers", "intermediate_size", "layer_norm_eps", "type_vocab_size",
                 "classifier_dropout", "hidden_act"):  # fmt: skip
        assert getattr(back, name) == getattr(hf, name), name
    assert dj.DistilBertConfig.from_hf(config.to_hf()) == config
    base = hf.to_dict()
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'.*only 'absolute'"):
        dj.DistilBertConfig.from_hf(dict(base, position_embedding_type="relative_key"))
    with pytest.raises(ValueError, match="is_decoder=true"):
        dj.DistilBertConfig.from_hf(dict(base, is_decoder=True))
    with pytest.raises(ValueError, match="hidden_act='silu'"):
        dj.DistilBertConfig.from_hf(dict(base, hidden_act="silu"))
    with pytest.raises(ValueError, match="type_vocab_size must be 0 for DistilBERT"):
        dj.small_config(type_vocab_size=2)


def test_bert_key_variants(hf_dir):
    """No `bert.` prefix, old-style gamma/beta, cls.predictions.decoder.* present, a pooler-less
    checkpoint into the bare model and into a pooled classifier, BertForPreTraining's NSP head."""
    path, hf = hf_dir("masked_lm", arch="bert")
    state = dj.load_state_dict(path)
    assert "cls.predictions.bias" in state and not any(k.startswith("bert.pooler") for k in state)
    config = dj.DistilBertConfig.from_json_file(path)
    mlm = dj.build_model(config, "masked_lm")
    reference, _ = dj.hf_to_params(state, mlm)
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in state.items()}  # fmt: skip
    old["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    old["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    old["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)  # BertForPreTraining's NSP head
    old["bert.embeddings.position_ids"] = np.arange(128)[None]
    variables, report = dj.hf_to_params(old, mlm)
    assert not report.initialized and not report.notes and "cls.seq_relationship.weight" in report.unused
    jax.tree_util.tree_map(np.testing.assert_array_equal, variables, reference)
    # the bare model from the masked-LM checkpoint: keys without the prefix, no pooler -> no pooler_output
    bare = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
    base = dj.build_model(config, "base", add_pooling_layer=False)
    base_vars, _ = dj.hf_to_params(bare, base)
    ids, mask, types = _inputs("base")
    out = base.apply(base_vars, ids, mask, token_type_ids=types)
    assert out.pooler_output is None
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), _theirs(hf.bert, ids, mask, types, "base"), atol=1e-4)
    # through from_pretrained: the pooler-less checkpoint gives a pooler-less bare model, and a pooled
    # classifier gets a fresh pooler (named in the warning, as BERT's keys)
    model, _ = dj.from_pretrained(path, "base")
    assert not model.has_pooler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, report = dj.from_pretrained(path, "sequence_classification", return_report=True)
    assert "bert.pooler.dense.weight" in report.initialized and "classifier.weight" in report.initialized
    assert any("bert.pooler.dense.weight" in str(w.message) for w in caught)
    # errors name BERT's own keys
    assert_errors_name_keys(state, mlm, "bert.encoder.layer.1.attention.self.key.weight",
                            "bert.encoder.layer.0.intermediate.dense.weight")  # fmt: skip


def assert_errors_name_keys(state, model, missing: str, misshaped: str) -> None:
    """Dropping key `missing` and giving `misshaped` (a [32, in] weight) another shape: the error names both as
    the checkpoint spells them."""
    broken = dict(state)
    del broken[missing]
    broken[misshaped] = np.zeros((5, 32), np.float32)
    with pytest.raises(dj.WeightsError, match=rf"(?s)missing keys \(1\): {missing}.*{misshaped}: checkpoint \(32, 5\)"):
        dj.hf_to_params(broken, model)


def test_token_type_ids(hf_dir, vocab_dir, tmp_path):
    """Pairs give 0/1 segments equal to BertTokenizerFast; DistilBERT ignores token types; bad ones are refused."""
    tok = dj.Tokenizer.from_pretrained(vocab_dir)
    theirs = transformers.BertTokenizerFast.from_pretrained(vocab_dir)
    first = ["a short question?", "the second question is a little longer than the first one"]
    second = ["and its context, which is longer than the question.", "short"]
    ours = tok(first, second, max_length=24)
    ref = theirs(first, second, max_length=24, padding=True, truncation=True, return_tensors="np")
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(getattr(ours, name), ref[name], err_msg=name)
    assert set(np.unique(ours.token_type_ids)) == {0, 1}
    # overflowing windows of a long pair keep their segment ids too
    windows = tok(first, [second[0] * 20, second[1]], max_length=24, truncation="only_second", stride=4,
                  return_overflowing_tokens=True)  # fmt: skip
    ref = theirs(first, [second[0] * 20, second[1]], max_length=24, truncation="only_second", stride=4,
                 return_overflowing_tokens=True, padding=True, return_tensors="np")  # fmt: skip
    assert len(windows) > 2
    np.testing.assert_array_equal(windows.token_type_ids, ref["token_type_ids"])
    np.testing.assert_array_equal(tok(first).token_type_ids, 0)
    # a BERT model saved with the tokenizer: transformers' AutoTokenizer gives token types too
    path, _ = hf_dir("base", arch="bert")
    model, variables = dj.from_pretrained(path)
    dj.save_pretrained(tmp_path / "saved", model, variables, tok)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert "token_type_ids" in auto(first, second)
    # token types change BERT's output, not DistilBERT's
    ids, mask, types = _inputs("base")
    a = model.apply(variables, ids, mask).last_hidden_state
    b = model.apply(variables, ids, mask, token_type_ids=types).last_hidden_state
    assert float(jnp.abs(a - b).max()) > 1e-3
    dpath, _ = hf_dir("base")
    dmodel, dvars = dj.from_pretrained(dpath)
    np.testing.assert_array_equal(np.asarray(dmodel.apply(dvars, ids, mask).last_hidden_state),
                                  np.asarray(dmodel.apply(dvars, ids, mask, token_type_ids=types).last_hidden_state))  # fmt: skip
    with pytest.raises(ValueError, match=r"token_type_ids must be in \[0, type_vocab_size=2\)"):
        model.apply(variables, ids, mask, token_type_ids=types + 2)
    with pytest.raises(ValueError, match="token_type_ids must be an integer array of the input shape"):
        model.apply(variables, ids, mask, token_type_ids=types[:, :3])


def test_parity_cli_detects_bert_model_dir(hf_dir, capsys):
    path, _ = hf_dir("sequence_classification", arch="bert")
    assert parity.main(["--model-dir", path, "--seq-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "all PASS" in out and "sequence_classification" in out


def test_bert_masked_lm_teacher_fields(hf_dir):
    """What a distillation teacher needs: logits, hidden_states and attentions from the masked-LM head."""
    path, _ = hf_dir("masked_lm", arch="bert")
    model, variables = dj.from_pretrained(path, head="masked_lm")
    ids, mask, _ = _inputs("masked_lm")
    out = model.apply(variables, ids, mask, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (2, 16, 1000)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 16, 16)
    json.dumps(model.config.to_hf())  # the config stays JSON-writable
