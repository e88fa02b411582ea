"""Hub model ids ("distilbert-base-uncased", "org/name") found in the local Hugging Face cache, offline.

The cache has huggingface_hub's layout:

    <cache>/models--<org>--<name>/refs/<branch or tag>       the commit hash it points at
    <cache>/models--<org>--<name>/snapshots/<commit>/…       the files (links into blobs/)

`<cache>` is `cache_dir`, else $HF_HUB_CACHE (or the older $HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub,
else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub — huggingface_hub's own order, read
at call time. Nothing is downloaded: a model not in the cache is an error saying where we looked and
how to fetch it."""

from __future__ import annotations

import os
import re

# a Hub repo id: "name" or "org/name" of letters, digits, "-", "_", "." (no "--" / ".." at the ends)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> str:
    """The Hugging Face Hub cache directory (`cache_dir` or the environment's, see the module doc)."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return os.path.expanduser(os.environ[name])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def is_repo_id(name: str) -> bool:
    """Whether `name` is spelled like a Hub model id ("name" or "org/name") rather than a path."""
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def cached_snapshot(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> str:
    """The snapshot directory of `repo_id` at `revision` (a branch or tag in refs/, or a commit hash;
    default "main") in the local cache. FileNotFoundError, saying where it looked and how to fetch the
    model, if it is not there."""
    cache = hub_cache_dir(cache_dir)
    repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    revision = revision or "main"
    fetch = (f"fetch it where there is network with `hf download {repo_id}` (huggingface_hub's CLI; older: "
             f"`huggingface-cli download {repo_id}`) or `huggingface_hub.snapshot_download({repo_id!r}"
             f"{'' if revision == 'main' else f', revision={revision!r}'})`, or point HF_HUB_CACHE / HF_HOME / "
             "cache_dir= at a cache that holds it")  # fmt: skip
    if not os.path.isdir(repo_dir):
        raise FileNotFoundError(f"{repo_id!r} is neither a local directory nor in the Hugging Face cache: looked for "
                                f"{repo_dir} (cache {cache}); {fetch}")  # fmt: skip
    ref = os.path.join(repo_dir, "refs", revision)
    commit = None
    if os.path.isfile(ref):
        with open(ref, encoding="utf-8") as f:
            commit = f.read().strip()
    elif _COMMIT.match(revision):
        commit = revision
    snapshots = os.path.join(repo_dir, "snapshots")
    if commit is None or not os.path.isdir(os.path.join(snapshots, commit)):
        refs_dir = os.path.join(repo_dir, "refs")
        refs = sorted(os.path.relpath(os.path.join(root, f), refs_dir)
                      for root, _, files in os.walk(refs_dir) for f in files)  # fmt: skip
        have = sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else []
        what = f"refs/{revision} -> {commit}, which has no snapshot" if commit else f"no refs/{revision}"
        raise FileNotFoundError(f"{repo_id!r} revision {revision!r} is not in the Hugging Face cache at {repo_dir} "
                                f"({what}; refs there: {refs or 'none'}; snapshots: {have or 'none'}); {fetch}")  # fmt: skip
    return os.path.join(snapshots, commit)


def resolve_model_path(path: str | os.PathLike, revision: str | None = None,
                       cache_dir: str | os.PathLike | None = None) -> str:  # fmt: skip
    """A local directory as is; a Hub model id -> its snapshot in the local cache (see `cached_snapshot`).
    FileNotFoundError for anything else."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if revision is not None:
            raise ValueError(f"revision={revision!r} selects a Hub model's version; {path} is a local directory")
        return path
    if not is_repo_id(path):
        raise FileNotFoundError(f"model directory {path} does not exist (nor is it a Hub model id like 'org/name')")
    return cached_snapshot(path, revision, cache_dir)
