"""sentence-transformers directories: `embed` applies the directory's pooling and normalization and
equals the real `sentence-transformers` package's `encode` on a locally built random BERT."""

import json
import os
import shutil

import numpy as np
import pytest
import transformers

import distilbert_jax as dj

sentence_transformers = pytest.importorskip("sentence_transformers")

TEXTS = ["The quick brown fox.", "a", "Functions return values; classes hold state. " * 12,
         "Ünïcödé and 中文 text", "two words"]  # fmt: skip


@pytest.fixture(scope="module")
def st_dir(vocab_dir, tmp_path_factory):
    """A sentence-transformers directory (BERT, max_seq_length 24, CLS pooling, Normalize) saved by the package."""
    import torch

    root = tmp_path_factory.mktemp("st")
    bert = root / "bert"
    vocab = os.path.join(vocab_dir, "vocab.txt")
    tok = transformers.BertTokenizerFast(vocab)
    config = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    model.save_pretrained(bert)
    tok.save_pretrained(bert)
    try:  # sentence-transformers >= 6 (the old `models` path warns there)
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models
    transformer = models.Transformer(str(bert), max_seq_length=24)
    st = sentence_transformers.SentenceTransformer(
        modules=[transformer, models.Pooling(32, pooling_mode="cls"), models.Normalize()], device="cpu"
    )
    st.save(str(root / "st"))
    return str(root / "st")


def _variant(st_dir, tmp_path, pooling: dict, normalize: bool) -> str:
    path = tmp_path / "variant"
    shutil.copytree(st_dir, path)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(dict(embedding_dimension=32, **pooling)))
    if not normalize:
        modules = json.loads((path / "modules.json").read_text())
        (path / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    return str(path)


@pytest.mark.parametrize("pooling, normalize", [
    (None, True),                                                                  # as saved: cls + Normalize
    ({"pooling_mode": "mean"}, False),
    ({"pooling_mode": ["max", "mean_sqrt_len_tokens"]}, True),                     # concatenated in order
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, False),   # legacy format: cls then mean
])  # fmt: skip
def test_embed_equals_sentence_transformers_encode(st_dir, tmp_path, pooling, normalize):
    path = st_dir if pooling is None else _variant(st_dir, tmp_path, pooling, normalize)
    reference = sentence_transformers.SentenceTransformer(path, device="cpu").encode(TEXTS, convert_to_numpy=True)
    model, variables = dj.from_pretrained(path)
    tok = dj.Tokenizer.from_pretrained(path)
    assert tok.model_max_length == 24
    ours = dj.embed(model, variables, tok, TEXTS, batch_size=2)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_sentence_dir_refusals(st_dir, tmp_path):
    path = _variant(st_dir, tmp_path, {"pooling_mode": "weightedmean"}, True)
    with pytest.raises(ValueError, match=r"pooling \['weightedmean'\] is not supported"):
        dj.from_pretrained(path)
    (tmp_path / "variant" / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean"}))
    modules = json.loads((tmp_path / "variant" / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (tmp_path / "variant" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match="module 'sentence_transformers.models.Dense'.*not supported"):
        dj.from_pretrained(path)
