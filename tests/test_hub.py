"""Models by Hub id from a local Hugging Face cache in huggingface_hub's layout (offline): cache_dir,
HF_HUB_CACHE, HF_HOME, revision= (branch, tag, commit), and the error for a model not in the cache."""

import hashlib
import os
import shutil

import numpy as np
import pytest

import distilbert_jax as dj
from distilbert_jax.hub import hub_cache_dir, is_repo_id

COMMIT_MAIN, COMMIT_V1 = "a" * 40, "0123456789abcdef0123456789abcdef01234567"


def _add_snapshot(cache, repo_id: str, commit: str, source_dirs: list[str], refs: tuple[str, ...]) -> str:
    """Put the files of `source_dirs` in the cache as huggingface_hub does: blobs named by hash, the snapshot's
    files links to them, refs/<ref> holding the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for source in source_dirs:
        for root, _, files in os.walk(source):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), source)
                data = open(os.path.join(root, name), "rb").read()
                blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
                blob.parent.mkdir(parents=True, exist_ok=True)
                blob.write_bytes(data)
                (snapshot / rel).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.path.relpath(blob, (snapshot / rel).parent), snapshot / rel)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return str(snapshot)


@pytest.fixture(scope="module")
def cache(hf_dir, vocab_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_home")
    hub = root / "hub"
    base, _ = hf_dir("base")
    classifier, _ = hf_dir("sequence_classification")
    _add_snapshot(hub, "distilbert-base-uncased", COMMIT_MAIN, [base, vocab_dir], ("main",))
    _add_snapshot(hub, "org/tiny", COMMIT_MAIN, [base, vocab_dir], ("main",))
    _add_snapshot(hub, "org/tiny", COMMIT_V1, [classifier], ("v1",))  # a tag on another commit
    return root


def _hidden(model, variables):
    ids = np.array([[2, 7, 9, 11]])
    return np.asarray(model.apply(variables, ids, np.ones_like(ids)).last_hidden_state)


def test_model_by_name_from_cache(cache, hf_dir, monkeypatch):
    base, _ = hf_dir("base")
    ref = _hidden(*dj.from_pretrained(base))
    model, variables = dj.from_pretrained("distilbert-base-uncased", cache_dir=cache / "hub")
    np.testing.assert_array_equal(_hidden(model, variables), ref)
    tok = dj.Tokenizer.from_pretrained("distilbert-base-uncased", cache_dir=cache / "hub")
    assert tok(["hello world"]).input_ids.shape[0] == 1
    # from the environment: HF_HUB_CACHE, else HF_HOME/hub
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    np.testing.assert_array_equal(_hidden(*dj.from_pretrained("org/tiny")), ref)
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(cache))
    assert hub_cache_dir() == str(cache / "hub")
    np.testing.assert_array_equal(_hidden(*dj.from_pretrained("org/tiny", revision="main")), ref)
    # revision: a tag, or a commit hash; the snapshot's own head comes from its config.json
    tagged, _ = dj.from_pretrained("org/tiny", revision="v1")
    by_commit, _ = dj.from_pretrained("org/tiny", revision=COMMIT_V1)
    assert type(tagged) is type(by_commit) is dj.DistilBertForSequenceClassification
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp := cache / "xdg"))
    assert hub_cache_dir() == os.path.join(tmp, "huggingface", "hub")


def test_not_in_cache_says_where_it_looked_and_how_to_fetch(cache, hf_dir):
    hub = cache / "hub"
    with pytest.raises(FileNotFoundError) as e:
        dj.from_pretrained("org/absent", cache_dir=hub)
    message = str(e.value)
    assert str(hub / "models--org--absent") in message and "hf download org/absent" in message
    assert "HF_HUB_CACHE" in message
    with pytest.raises(FileNotFoundError, match=r"revision 'v2' is not in the Hugging Face cache.*no refs/v2.*"
                                                r"refs there: \['main', 'v1'\].*revision='v2'"):
        dj.Tokenizer.from_pretrained("org/tiny", revision="v2", cache_dir=hub)
    broken = cache / "broken"
    shutil.copytree(hub / "models--org--tiny", broken / "models--org--tiny", symlinks=True)
    shutil.rmtree(broken / "models--org--tiny" / "snapshots" / COMMIT_MAIN)
    with pytest.raises(FileNotFoundError, match=f"refs/main -> {COMMIT_MAIN}, which has no snapshot"):
        dj.from_pretrained("org/tiny", cache_dir=broken)
    # a path that is no directory and no Hub id, and revision= with a directory
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dj.from_pretrained(cache / "nope")
    base, _ = hf_dir("base")
    with pytest.raises(ValueError, match="revision='v1' selects a Hub model's version"):
        dj.from_pretrained(base, revision="v1")
    assert is_repo_id("sentence-transformers/all-MiniLM-L6-v2") and is_repo_id("bert-base-uncased")
    assert not any(map(is_repo_id, ["../x", "a/b/c", "/abs/path", "org/", "./rel", "a..b"]))
