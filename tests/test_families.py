"""RoBERTa, XLM-RoBERTa, CamemBERT and ELECTRA checkpoints in the same encoder code: parity per head and
depth against `transformers`, save -> `transformers` reload, positions after the padding index, the ELECTRA
embedding projection, refused configs; BPE and Unigram tokenizer.json files equal to AutoTokenizer;
sentence-transformers directories on these encoders."""

import json

import numpy as np
import pytest
import tokenizers
import torch
import transformers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

import distilbert_jax as dj
from bench import parity
from bench.common import arch_heads, hf_class_name
from bench.corpus import MIXED, sentences
from tests.test_bert import _ours, _theirs, assert_errors_name_keys

# every head of RoBERTa and ELECTRA; XLM-RoBERTa and CamemBERT share RoBERTa's numerics (class names differ)
CASES = ([("roberta", h) for h in arch_heads("roberta")] + [("electra", h) for h in arch_heads("electra")]
         + [(arch, h) for arch in ("xlm-roberta", "camembert") for h in ("masked_lm", "sequence_classification")])  # fmt: skip


@pytest.mark.parametrize("arch, head", CASES)
def test_family_head_parity_every_depth_and_reload(hf_dir, tmp_path, arch, head):
    path, hf = hf_dir(head, arch=arch)
    model, variables = dj.from_pretrained(path)  # head and model_type from config.json
    assert model.config.model_type == arch and type(model) is dj.build_model(model.config, head).__class__
    ids, mask, types = parity.parity_inputs(model.config, head, 2, 16, seed=1)
    results = parity.compare(hf, model, variables, ids, mask, head, types)
    names = [name for name, _, _ in results]
    assert "hidden[embeddings]" in names and "hidden[layer 2]" in names
    assert ("pooler_output" in names) == (head == "base" and arch != "electra")
    for name, diff, scale in results:
        assert scale > 1e-3, name
        assert diff <= 1e-4, (arch, head, name, diff)
    # save -> transformers' class (and the Auto classes) reload it with the same outputs
    out = tmp_path / "out"
    dj.save_pretrained(out, model, variables)
    assert transformers.AutoConfig.from_pretrained(out).architectures == [hf_class_name(head, arch)]
    auto = transformers.AutoModel if head == "base" else getattr(transformers, hf_class_name(head, arch))
    reloaded = auto.from_pretrained(out, attn_implementation="eager").eval()
    types = np.zeros_like(mask) if types is None else types
    np.testing.assert_allclose(_theirs(reloaded, ids, mask, types, head), _ours(model, variables, ids, mask, types, head),
                               atol=1e-4)  # fmt: skip
    model2, variables2 = dj.from_pretrained(out)
    assert model2.config == model.config
    np.testing.assert_array_equal(_ours(model2, variables2, ids, mask, types, head),
                                  _ours(model, variables, ids, mask, types, head))  # fmt: skip


def test_roberta_positions_skip_padding(hf_dir):
    """Left padding moves every real token's position (pad_token_id + 1 + index among real tokens); inputs_embeds
    count from pad_token_id + 1; the longest input is max_position_embeddings - pad_token_id - 1."""
    path, hf = hf_dir("base", arch="roberta")
    model, variables = dj.from_pretrained(path)
    assert (model.config.pad_token_id, model.config.position_offset, model.config.max_seq_len) == (1, 2, 128)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (3, 12))
    ids[1, :4] = 1  # left padding
    ids[2, 5:7] = 1  # padding ids inside a row: skipped by the position count too
    mask = (ids != 1).astype(np.int64)
    ref = _theirs(hf, ids, mask, np.zeros_like(ids), "base")
    ours = _ours(model, variables, ids, mask, np.zeros_like(ids), "base")
    np.testing.assert_allclose(ours[mask == 1], ref[mask == 1], atol=1e-5)
    # with inputs_embeds the positions are pad_token_id + 1 + 0, 1, … (no padding to skip): as ids without padding
    embeds = variables["params"]["embeddings"]["word_embeddings"]["embedding"][ids[:1]]
    a = model.apply(variables, ids[:1], mask[:1]).last_hidden_state
    b = model.apply(variables, None, mask[:1], inputs_embeds=embeds).last_hidden_state
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    with pytest.raises(ValueError, match=r"sequence length 129 exceeds max_position_embeddings=130 - 2"):
        model.apply(variables, np.full((1, 129), 7), np.ones((1, 129)))
    model.apply(variables, np.full((1, 128), 7), np.ones((1, 128)))


def test_electra_embedding_projection_and_heads(hf_dir):
    path, hf = hf_dir("discriminator", arch="electra")
    model, variables = dj.from_pretrained(path)
    config = model.config
    assert (config.embedding_size, config.embedding_dim, config.dim, config.has_pooler) == (16, 16, 32, False)
    params = variables["params"]["distilbert"]
    assert params["embeddings"]["word_embeddings"]["embedding"].shape == (1000, 16)
    assert params["embeddings_project"]["kernel"].shape == (16, 32)
    assert "pooler" not in params
    # the masked-LM head projects back to the embedding width, and its decoder is the (tied) word embeddings
    mlm_path, _ = hf_dir("masked_lm", arch="electra")
    mlm, mlm_vars = dj.from_pretrained(mlm_path)
    assert mlm_vars["params"]["vocab_transform"]["kernel"].shape == (32, 16)
    # the discriminator is ELECTRA's only, by name
    with pytest.raises(ValueError, match="discriminator head is electra's.*model_type='roberta'"):
        dj.build_model(dj.small_config(model_type="roberta"), "discriminator")
    roberta_path, _ = hf_dir("base", arch="roberta")
    with pytest.raises(ValueError, match="discriminator head is electra's"):
        dj.from_pretrained(roberta_path, "discriminator")


def test_family_configs_round_trip_and_refusals():
    for arch, kwargs in (("roberta", {}), ("xlm-roberta", {}), ("camembert", {}), ("electra", dict(embedding_size=24))):
        hf = transformers.AutoConfig.for_model(arch, vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=48, **kwargs)  # fmt: skip
        config = dj.DistilBertConfig.from_hf(hf.to_dict())
        assert (config.model_type, config.dim, config.pad_token_id) == (arch, 32, hf.pad_token_id)
        assert config.embedding_size == kwargs.get("embedding_size")
        back = transformers.AutoConfig.for_model(**config.to_hf())
        for name in ("model_type", "hidden_size", "pad_token_id", "type_vocab_size", "layer_norm_eps",
                     "max_position_embeddings", *kwargs):  # fmt: skip
            assert getattr(back, name) == getattr(hf, name), (arch, name)
        assert dj.DistilBertConfig.from_hf(config.to_hf()) == config
    electra = transformers.ElectraConfig(vocab_size=100, hidden_size=32, num_attention_heads=4).to_dict()
    with pytest.raises(ValueError, match="unsupported electra config: summary_type='last'"):
        dj.DistilBertConfig.from_hf(dict(electra, summary_type="last"))
    roberta = transformers.RobertaConfig(vocab_size=100, hidden_size=32, num_attention_heads=4).to_dict()
    with pytest.raises(ValueError, match="unsupported roberta config: position_embedding_type='relative_key'"):
        dj.DistilBertConfig.from_hf(dict(roberta, position_embedding_type="relative_key"))
    with pytest.raises(ValueError, match="embedding_size .* is an ELECTRA option, not roberta's"):
        dj.small_config(model_type="roberta", embedding_size=16)
    with pytest.raises(ValueError, match="must exceed pad_token_id \\+ 1"):
        dj.small_config(model_type="roberta", max_position_embeddings=2)


def test_family_key_errors_name_the_checkpoint_keys(hf_dir):
    path, _ = hf_dir("masked_lm", arch="roberta")
    state = dj.load_state_dict(path)
    assert "lm_head.bias" in state and "roberta.encoder.layer.0.attention.self.query.weight" in state
    model = dj.build_model(dj.DistilBertConfig.from_json_file(path), "masked_lm")
    reference, report = dj.hf_to_params(state, model)
    assert not report.unused and not report.initialized
    # the tied copies older checkpoints carry are recognised
    old = dict(state, **{"lm_head.decoder.weight": state["roberta.embeddings.word_embeddings.weight"],
                         "lm_head.decoder.bias": state["lm_head.bias"]})  # fmt: skip
    variables, report = dj.hf_to_params(old, model)
    assert report.unused == ["lm_head.decoder.bias"] and not report.notes
    assert_errors_name_keys(state, model, "roberta.encoder.layer.1.attention.self.key.weight", "lm_head.dense.weight")


# ---- tokenizers ---------------------------------------------------------------------------------

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _bpe() -> tokenizers.Tokenizer:
    """A byte-level BPE tokenizer as RoBERTa's tokenizer.json has it."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(sentences(1500), trainers.BpeTrainer(vocab_size=700, special_tokens=ROBERTA_SPECIALS,
                                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # fmt: skip
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _unigram() -> tokenizers.Tokenizer:
    """A SentencePiece-style Unigram tokenizer laid out as transformers v5 writes XLM-RoBERTa's tokenizer.json
    (whitespace split, then Metaspace; <mask> last). v5's XLMRobertaTokenizer rebuilds that pipeline from
    the vocabulary whatever the file says (of a file's normalizer it keeps only a Precompiled charsmap), so
    a file laid out otherwise can tokenize differently there than in `tokenizers`."""
    tok = tokenizers.Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])  # fmt: skip
    tok.train_from_iterator(sentences(1500), trainers.UnigramTrainer(vocab_size=700, special_tokens=ROBERTA_SPECIALS[:4],
                                                                     unk_token="<unk>"))  # fmt: skip
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])  # fmt: skip
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


@pytest.fixture(scope="module")
def tokenizer_dirs(vocab_dir, tmp_path_factory):
    """{arch: directory} of tokenizers saved by transformers: RoBERTa (BPE), XLM-RoBERTa (Unigram), ELECTRA (WordPiece)."""
    root = tmp_path_factory.mktemp("family_tokenizers")
    made = {
        "roberta": transformers.RobertaTokenizerFast(tokenizer_object=_bpe(), model_max_length=128),
        "xlm-roberta": transformers.XLMRobertaTokenizerFast(tokenizer_object=_unigram(), model_max_length=128),
        "electra": transformers.ElectraTokenizerFast.from_pretrained(vocab_dir, model_max_length=128),
    }
    for arch, tok in made.items():
        tok.save_pretrained(root / arch)
    return {arch: str(root / arch) for arch in made}


@pytest.mark.parametrize("arch", ["roberta", "xlm-roberta", "electra"])
def test_tokenizer_equals_auto_tokenizer(tokenizer_dirs, mixed_texts, arch, tmp_path):
    ours = dj.Tokenizer.from_pretrained(tokenizer_dirs[arch])
    auto = transformers.AutoTokenizer.from_pretrained(tokenizer_dirs[arch])
    assert ours.pad_token_id == auto.pad_token_id and ours.cls_token_id == auto.cls_token_id
    assert (ours.mask_token_id, ours.sep_token_id, ours.unk_token_id) == (auto.mask_token_id, auto.sep_token_id,
                                                                         auto.unk_token_id)  # fmt: skip
    texts = [t for t in mixed_texts if t]  # accents, CJK, emoji, whitespace runs, a 700-word text
    batch = ours(texts, max_length=128)
    ref = auto(texts, max_length=128, padding=True, truncation=True, return_tensors="np", return_offsets_mapping=True)
    for name in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(getattr(batch, name), ref[name], err_msg=name)
    np.testing.assert_array_equal(batch.offsets, ref["offset_mapping"])
    assert batch.input_ids.shape[1] == 128 and (batch.input_ids == ours.unk_token_id).sum() < 0.2 * batch.attention_mask.sum()
    # pairs (<s> A </s></s> B </s> for the RoBERTa family), windows of a long second text with a stride
    first, second = ["a short question?", "où est 東京?"], ["the context: " + " ".join(sentences(30)), MIXED[1] + MIXED[2]]
    windows = ours(first, second, max_length=32, truncation="only_second", stride=6, return_overflowing_tokens=True)
    ref = auto(first, second, max_length=32, truncation="only_second", stride=6, return_overflowing_tokens=True,
               padding=True, return_tensors="np", return_offsets_mapping=True)  # fmt: skip
    assert len(windows) > 4
    np.testing.assert_array_equal(windows.input_ids, ref["input_ids"])
    np.testing.assert_array_equal(windows.offsets, ref["offset_mapping"])
    np.testing.assert_array_equal(windows.overflow_to_sample_mapping, ref["overflow_to_sample_mapping"])
    if "token_type_ids" in ref:  # ELECTRA: segment ids 0 / 1 as BERT; the RoBERTa family has one token type
        np.testing.assert_array_equal(windows.token_type_ids, ref["token_type_ids"])
        assert windows.token_type_ids.max() == 1
    else:
        assert windows.token_type_ids.max() == 0
        row = ours("a question", "an answer").input_ids[0].tolist()  # <s> A </s></s> B </s>
        assert row[0] == ours.cls_token_id and row.count(ours.sep_token_id) == 3 and row[-1] == ours.sep_token_id
    # saved back with the model's class name: AutoTokenizer reads it again with the same ids
    ours.save_pretrained(tmp_path / "saved", tokenizer_class=type(auto).__name__.removesuffix("Fast"))
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "saved")
    np.testing.assert_array_equal(again(texts[:8], padding=True, return_tensors="np")["input_ids"],
                                  ours(texts[:8]).input_ids)  # fmt: skip
    assert dj.Tokenizer.from_pretrained(tmp_path / "saved").special_tokens == ours.special_tokens


def test_save_pretrained_with_tokenizer_keeps_its_kind(tokenizer_dirs, hf_dir, tmp_path):
    """A WordPiece tokenizer is written as the model family's class; a BPE / Unigram one keeps its own (a
    multilingual BERT with XLM-R's tokenizer stays XLMRobertaTokenizer)."""
    for arch, tok_arch, expected in (("roberta", "roberta", "RobertaTokenizer"), ("bert", "xlm-roberta", "XLMRobertaTokenizer"),
                                     ("electra", "electra", "ElectraTokenizer")):  # fmt: skip
        model, variables = dj.from_pretrained(hf_dir("base", arch=arch)[0])
        tok = dj.Tokenizer.from_pretrained(tokenizer_dirs[tok_arch])
        dj.save_pretrained(tmp_path / arch, model, variables, tok)
        assert json.loads((tmp_path / arch / "tokenizer_config.json").read_text())["tokenizer_class"] == expected
        auto = transformers.AutoTokenizer.from_pretrained(tmp_path / arch)  # v5: ElectraTokenizer is BertTokenizer
        texts = ["Héllo wörld, 東京 😀", "two   words"]
        np.testing.assert_array_equal(auto(texts, padding=True, return_tensors="np")["input_ids"], tok(texts).input_ids)


# ---- sentence-transformers ----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["roberta", "xlm-roberta", "electra"])
def test_sentence_transformers_on_family_encoders(tokenizer_dirs, tmp_path, arch):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules as st_models
    except ImportError:
        from sentence_transformers import models as st_models
    auto = transformers.AutoTokenizer.from_pretrained(tokenizer_dirs[arch])
    extra = dict(embedding_size=16) if arch == "electra" else dict(max_position_embeddings=66, pad_token_id=1)
    config = transformers.AutoConfig.for_model(arch, vocab_size=len(auto), hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=64, **extra)  # fmt: skip
    torch.manual_seed(0)
    encoder = transformers.AutoModel.from_config(config)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    encoder.save_pretrained(tmp_path / "encoder")
    auto.save_pretrained(tmp_path / "encoder")
    transformer = st_models.Transformer(str(tmp_path / "encoder"), max_seq_length=24)
    st = sentence_transformers.SentenceTransformer(
        modules=[transformer, st_models.Pooling(32, pooling_mode="mean"), st_models.Normalize()], device="cpu")
    st.save(str(tmp_path / "st"))
    texts = ["The quick brown fox.", "a", "Functions return values; classes hold state. " * 12,
             "Ünïcödé and 中文 text 😀", "two   words"]  # fmt: skip
    reference = sentence_transformers.SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(texts)
    model, variables = dj.from_pretrained(tmp_path / "st")
    tok = dj.Tokenizer.from_pretrained(tmp_path / "st")
    assert model.config.model_type == arch and tok.model_max_length == 24
    ours = dj.embed(model, variables, tok, texts, batch_size=2)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_parity_cli_new_arches(hf_dir, capsys):
    """`bench.parity small --arch electra` runs every ELECTRA head (the discriminator too); --model-dir detects
    the model_type; a head the arch lacks is refused."""
    assert parity.main(["small", "--arch", "electra", "--seq-len", "16"]) == 0
    out = capsys.readouterr().out
    assert "7 heads" in out and "all PASS" in out and "discriminator" in out
    path, _ = hf_dir("question_answering", arch="xlm-roberta")
    assert parity.main(["--model-dir", path, "--seq-len", "16"]) == 0
    assert "all PASS" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parity.main(["small", "--arch", "roberta", "--head", "discriminator"])
    with pytest.raises(SystemExit):
        parity.main(["small", "--arch", "roberta", "--seq-len", "129"])  # 130 positions hold 128 tokens
