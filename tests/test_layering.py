"""The package's layers import one way only, and nothing imports in a cycle.

    config / errors / atomic / hub / activations  <-  nn  <-  {ckpts, train, decoding}
        <-  {pipelines, tasks, parallel, export}  <-  cli;    text stands alone (no jax, no flax)

`export/runtime.py` imports nothing of the package at all (nor flax): it runs exported files
where the models are not installed.

Every `import` counts, at module level or inside a function. The one allowed upward edge is
`Model.from_pretrained` / `save_pretrained` in `nn/module.py` calling into `ckpts/loading.py`.
"""

from __future__ import annotations

import ast
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "xmod_jax"
LEAVES = {"config", "errors", "atomic", "hub", "activations"}
RANKS = {
    "leaf": 0,
    "nn": 1,
    "ckpts": 2,
    "train": 2,
    "decoding": 2,
    "pipelines": 3,
    "tasks": 3,
    "parallel": 3,
    "export": 3,
    "cli": 4,
}
TEXT_USERS = {"pipelines", "tasks", "cli"}  # text stands beside the stack: it uses leaves only
ALLOWED_UPWARD = {("xmod_jax.nn.module", "xmod_jax.ckpts.loading")}
ML_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax")


def layer(module: str) -> str:
    """`xmod_jax.nn.heads` -> "nn"; top-level leaves -> "leaf"."""
    part = module.split(".")[1]
    return "leaf" if part in LEAVES else part


def may_import(source: str, target: str) -> bool:
    """Whether layer rules allow `source` to import `target` (both xmod_jax modules)."""
    a, b = layer(source), layer(target)
    if a == b:
        return True
    if a == "text":
        return b == "leaf"
    if b == "text":
        return a in TEXT_USERS
    if RANKS[a] == RANKS[b]:  # ckpts, train and decoding are peers: no edges between them
        return False
    return RANKS[b] < RANKS[a]


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: pathlib.Path) -> set[str]:
    """Every module `path` imports (absolute names), wherever the import statement sits."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            for alias in node.names:  # `from xmod_jax.nn import losses` imports a submodule
                submodule = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / submodule.replace(".", "/")).with_suffix(".py")
                found.add(submodule if is_module.exists() else base)
    return found


def import_graph() -> dict[str, set[str]]:
    """xmod_jax module -> the xmod_jax modules it imports (the facade `xmod_jax` excluded)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name != "xmod_jax":
            graph[name] = {m for m in imports_of(path) if m.startswith("xmod_jax.")}
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{source} imports {target} ({layer(source)} -> {layer(target)})"
        for source, targets in graph.items()
        for target in sorted(targets)
        if (source, target) not in ALLOWED_UPWARD and not may_import(source, target)
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules), or None; the allowed upward edge is left out."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if (node, target) in ALLOWED_UPWARD:
                continue
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if state.get(target) is None and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


# ------------------------------------------------------------------------------------ tests
def test_every_import_points_down_the_layers():
    graph = import_graph()
    assert {layer(m) for m in graph} <= {*RANKS, "text"}, "a module outside the known layers"
    assert violations(graph) == []


def test_the_one_upward_edge_is_where_the_docs_say():
    graph = import_graph()
    assert "xmod_jax.ckpts.loading" in graph["xmod_jax.nn.module"]
    assert "ckpts" in (PACKAGE / "nn" / "module.py").read_text().split('"""')[1]


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_text_imports_neither_jax_nor_flax():
    for path in sorted((PACKAGE / "text").glob("*.py")):
        heavy = sorted(m for m in imports_of(path) if m.split(".")[0] in ML_PACKAGES)
        assert heavy == [], f"{path.name} imports {heavy}"


def test_the_export_runtime_needs_only_jax_and_numpy():
    path = PACKAGE / "export" / "runtime.py"
    imported = {m.split(".")[0] for m in imports_of(path)}
    assert imported - set(sys.stdlib_module_names) <= {"jax", "numpy"}, imported


def test_the_checks_catch_upward_edges_and_cycles():
    graph = {
        "xmod_jax.config": {"xmod_jax.nn.heads"},  # a leaf reaching up
        "xmod_jax.nn.heads": {"xmod_jax.nn.layers"},
        "xmod_jax.nn.layers": {"xmod_jax.nn.heads"},  # a cycle inside one layer
        "xmod_jax.ckpts.loading": {"xmod_jax.train.steps"},  # peers
        "xmod_jax.text.tokenizer": {"xmod_jax.nn.heads"},  # text is not alone
    }
    found = violations(graph)
    assert len(found) == 3 and all("imports" in line for line in found)
    assert find_cycle(graph) == ["xmod_jax.nn.heads", "xmod_jax.nn.layers", "xmod_jax.nn.heads"]
