"""The packages depend one way — core (`distilbert_jax` without `train` / `nas`) ← `loaders` ← training
(`distilbert_jax.train`, `distilbert_jax.nas`) ← `rl` / `bench` — and no modules import each other in a
cycle. Read from the source with `ast` (lazy imports inside functions count too); see docs/layering.md."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("distilbert_jax", "loaders", "rl", "bench")


def layer(module: str) -> int:
    """0 core, 1 loaders, 2 training, 3 applications (rl, bench)."""
    parts = module.split(".")
    if parts[0] == "distilbert_jax":
        return 2 if len(parts) > 1 and parts[1] in ("train", "nas") else 0
    return {"loaders": 1, "rl": 3, "bench": 3}[parts[0]]


def modules() -> dict[str, str]:
    """{dotted module name: file path} of every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3].replace(os.sep, ".")
                    out[rel.removesuffix(".__init__")] = os.path.join(dirpath, name)
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: project modules it imports}, relative imports resolved; `from pkg import sub` → pkg.sub."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for alias in node.names:
                    sub = f"{origin}.{alias.name}"
                    targets.add(sub if sub in mods else origin)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def test_dependencies_point_one_way():
    wrong = sorted(f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
                   for m, targets in import_graph().items() for t in targets if layer(t) > layer(m))  # fmt: skip
    assert not wrong, "imports against the layering core ← loaders ← training ← rl/bench:\n" + "\n".join(wrong)


def test_no_import_cycles():
    graph = import_graph()
    cycles: list[str] = []
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_train_corpus_and_data_do_not_import_each_other():
    graph = import_graph()
    assert "distilbert_jax.train.corpus" not in graph["distilbert_jax.train.data"]
    assert "distilbert_jax.train.data" in graph["distilbert_jax.train.corpus"]  # the one allowed direction
