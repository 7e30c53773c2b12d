"""The package's shape: no import cycles, a leaf stage contract, stages that never reach for the runner, tasks
that fail clearly until they are built."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgedistill

PACKAGE = Path(edgedistill.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Dotted names a module imports anywhere in its body, TYPE_CHECKING blocks excluded."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + [base]).strip(".")
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (lazy imports included, TYPE_CHECKING
    blocks excluded): a lazy import that closes a circle is still a circle."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = _imports(ast.parse(path.read_text()), package)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_stage_contract_is_a_leaf() -> None:
    assert import_graph()["edgedistill.contract"] == set()


def test_stages_and_tasks_never_import_the_orchestration() -> None:
    orchestration = {"edgedistill.runner", "edgedistill.pipeline", "edgedistill.report", "edgedistill.bundle",
                     "edgedistill.html_report", "edgedistill.cli"}
    graph = import_graph()
    for module, imports in graph.items():
        if module.startswith(("edgedistill.stages", "edgedistill.tasks", "edgedistill.quant",
                              "edgedistill.profiling")):
            assert not imports & orchestration, f"{module} imports {imports & orchestration}"


def test_one_registry_row_per_stage_type() -> None:
    from edgedistill import stages
    from edgedistill.recipe import Recipe

    union = Recipe.model_fields["stages"].annotation.__args__[0].__origin__.__args__
    assert {spec.config for spec in stages.REGISTRY.values() if spec.config is not None} == set(union)
    for name, spec in stages.REGISTRY.items():
        if spec.config is not None:  # None: only tasks that name a config have the stage (finetune)
            assert spec.config.model_fields["type"].annotation.__args__ == (name,)


def test_planned_tasks_fail_validation_clearly(tmp_path: Path, tiny_world: dict,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from edgedistill import tasks
    from edgedistill.errors import RecipeError
    from edgedistill.recipe import load_recipe
    from tests.conftest import tiny_recipe, write_recipe

    monkeypatch.setitem(tasks.PLANNED, "segmenter", "text segmenters")
    with pytest.raises(RecipeError, match="task: 'segmenter'.*not yet available"):
        load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_world, task="segmenter")))


def test_unknown_task_names_the_choices(tmp_path: Path, tiny_world: dict) -> None:
    from edgedistill.errors import RecipeError
    from edgedistill.recipe import load_recipe
    from tests.conftest import tiny_recipe, write_recipe

    with pytest.raises(RecipeError, match="embedding, (reranker, classifier|classifier, reranker)"):
        load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_world, task="segmenter")))
