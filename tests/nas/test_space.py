"""Search space, arch formats and their errors."""

import numpy as np
import pytest

from distilbert_jax.nas import Arch, ArchError, SearchSpace, parse_arch

ATB = ("{'sample_layer_num': 4, 'sample_num_attention_heads': [4, 4, 4, 4], 'sample_qkv_sizes': [256, 256, 256, 256], "
       "'sample_hidden_size': 256, 'sample_intermediate_sizes': [512, 512, 512, 512]}")  # fmt: skip


def test_parse_autotinybert_string_json_and_ours():
    want = Arch(layers=4, hidden=256, heads=4, qkv=256, ffn=512)
    assert parse_arch(ATB) == want
    assert parse_arch(ATB.replace("'", '"')) == want  # plain JSON
    assert parse_arch('{"layers": 4, "hidden": 256, "heads": 4, "qkv": 256, "ffn": 512}') == want
    assert parse_arch(want.to_autotinybert()) == want and parse_arch(want.to_json()) == want


def test_default_space_is_the_originals():
    s = SearchSpace()
    assert s.smallest() == Arch(1, 128, 1, 64, 128) and s.largest() == Arch(8, 768, 12, 768, 3072)
    assert s.hidden_values[:2] == (128, 144) and s.ffn_values[:2] == (128, 160)
    kd = SearchSpace(mode="kd")
    assert kd.head_values == (12,) and kd.qkv_values[:2] == (180, 192) and kd.largest().qkv == 768
    assert s.check(ATB) == parse_arch(ATB)


def test_sampling_enumeration_and_stream():
    s = SearchSpace.from_dict({"layer_num_space": [1, 2], "hidden_size_space": [32, 64], "head_num_space": [1, 2],
                               "head_size": 16, "intermediate_size_space": [32, 96]})  # fmt: skip
    archs = list(s.archs())
    assert len(archs) == s.size() == 2 * 3 * 2 * 3 and len(set(archs)) == len(archs)
    assert all(s.check(a) == a for a in archs)
    assert [s.arch_at(7, i) for i in range(5)] == [s.arch_at(7, i) for i in range(5)]  # a pure function of (seed, i)
    assert len({s.sample(np.random.default_rng(i)) for i in range(50)}) > 5


@pytest.mark.parametrize("arch, match", [
    ("{'sample_layer_num': 9, 'sample_num_attention_heads': [4]*9}", "malformed arch string"),
    ("not an arch", "malformed arch string"),
    (ATB.replace("'sample_layer_num': 4", "'sample_layer_num': 3"), "sample_num_attention_heads has 4 entries but sample_layer_num is 3"),
    (ATB.replace("[512, 512, 512, 512]", "[512, 512, 512, 256]"), r"sample_intermediate_sizes = \[512, 512, 512, 256\] differs between layers"),
    (ATB.replace("'sample_hidden_size': 256", "'sample_hidden_size': 800"), r"hidden \(sample_hidden_size\)=800 is not in the search space \(128..768 step 16\)"),
    (ATB.replace("'sample_hidden_size': 256", "'sample_hidden_size': 250"), r"hidden \(sample_hidden_size\)=250 is not in the search space"),
    (ATB.replace("[256, 256, 256, 256]", "[250, 250, 250, 250]"), "heads=4 must divide qkv=250"),
    (ATB.replace("[256, 256, 256, 256]", "[128, 128, 128, 128]"), r"mlm mode needs qkv = 64 x heads = 256"),
    (ATB.replace("'sample_layer_num': 4", "'sample_layer_num': 9").replace("[4, 4, 4, 4]", "[4]*9"), "malformed"),
    ('{"layers": 9, "hidden": 256, "heads": 4, "qkv": 256, "ffn": 512}', r"layers \(sample_layer_num\)=9 is not in the search space \(1..8\)"),
    ('{"layers": 2, "hidden": 256, "heads": 4, "qkv": 256}', r"missing \['ffn'\]"),
])  # fmt: skip
def test_bad_archs_name_field_and_range(arch, match):
    with pytest.raises(ArchError, match=match):
        SearchSpace().check(arch)


def test_kd_mode_errors_and_bad_space():
    with pytest.raises(ArchError, match="kd mode fixes heads at 12"):
        SearchSpace(mode="kd").check(Arch(2, 256, 4, 240, 512))
    with pytest.raises(ArchError, match=r"qkv \(sample_qkv_sizes\)=204 is not|heads=12 must divide qkv=200"):
        SearchSpace(mode="kd").check(Arch(2, 256, 12, 200, 512))
    with pytest.raises(ArchError, match=r"layer_num_space \[1, 13\] must satisfy 1 <= min <= max <= 12"):
        SearchSpace.from_dict({"layer_num_space": [1, 13]})
    with pytest.raises(ArchError, match="hidden_size_space max 200 is not on the grid 128"):
        SearchSpace.from_dict({"hidden_size_space": [128, 200]})
    with pytest.raises(ArchError, match=r"unknown search-space key\(s\) \['hiden'\]"):
        SearchSpace.from_dict({"hiden": 3})


def test_short_form_the_tables_print_is_accepted_everywhere():
    # issue 21.3: `extract --arch L2_H224_A2_Q128_F128` was refused with Python internals
    want = Arch(2, 224, 2, 128, 128)
    assert parse_arch("L2_H224_A2_Q128_F128") == want == parse_arch(str(want)) == parse_arch(" l2_h224_a2_q128_f128 ")
    assert SearchSpace().check("L2_H224_A2_Q128_F128") == want
    # per-layer values joined by '-' (heterogeneous archs), one value = every layer
    het = parse_arch("L2_H224_A2-4_Q128-256_F128-512")
    assert het == Arch(2, 224, (2, 4), (128, 256), (128, 512)) and str(het) == "L2_H224_A2-4_Q128-256_F128-512"
    assert parse_arch(str(het)) == het and parse_arch(het.to_autotinybert()) == het and parse_arch(het.to_json()) == het
    assert parse_arch("L2_H224_A2-2_Q128_F128") == want  # a uniform list is the uniform arch
    with pytest.raises(ArchError, match=r"A2-4-8 \(heads\) has 3 values but L2 has 2 layers"):
        parse_arch("L2_H224_A2-4-8_Q128_F128")


@pytest.mark.parametrize("text", ["L2_H224_A2_Q128", "L2_H224_A2_Q128_F128x", "hello", "[1, 2]", "L2-H224"])
def test_malformed_arch_lists_the_formats_with_examples(text):
    with pytest.raises(ArchError) as e:
        parse_arch(text)
    message = str(e.value)
    assert "ast." not in message and "object at 0x" not in message
    for example in ("L4_H256_A4_Q256_F512", "L2_H256_A2-4_Q128-256_F512-1024", "'sample_layer_num': 2", '"layers": 2'):
        assert example in message


def test_uniform_space_refuses_per_layer_archs_and_heterogeneous_space_checks_each_layer():
    with pytest.raises(ArchError, match=r"sample_intermediate_sizes = \[128, 512\] differs between layers; .*heterogeneous"):
        SearchSpace().check("L2_H224_A2_Q128_F128-512")
    het = SearchSpace(heterogeneous=True)
    assert het.check("L2_H224_A2-4_Q128-256_F128-512") == Arch(2, 224, (2, 4), (128, 256), (128, 512))
    with pytest.raises(ArchError, match=r"ffn \(sample_intermediate_sizes\) of layer 1=100 is not in the search space"):
        het.check("L2_H224_A2_Q128_F128-100")
    with pytest.raises(ArchError, match=r"qkv \(sample_qkv_sizes\) of layer 0=256: mlm mode needs qkv = 64 x heads = 128"):
        het.check("L2_H224_A2_Q256-128_F128")
    small = SearchSpace.from_dict({"layer_num_space": [1, 2], "hidden_size_space": [32, 48], "head_num_space": [1, 2],
                                   "head_size": 16, "intermediate_size_space": [32, 64], "heterogeneous": True})  # fmt: skip
    archs = list(small.archs())
    assert len(archs) == small.size() == 2 * (4 + 16) and len(set(archs)) == len(archs)
    assert sum(not a.uniform for a in archs) == 2 * 12 and all(small.check(a) == a for a in archs)
    assert sorted(archs) == sorted(archs, key=lambda a: (a.layers, a.hidden, a.layer_heads, a.layer_qkv, a.layer_ffn))
    assert any(not small.sample(np.random.default_rng(i)).uniform for i in range(20))
