"""The house rules of the package, checked on its source: small modules, imports that follow the data flow
(no loop between folders, nothing through the root package), MLflow spoken to from tfrexp/tracking/ alone,
records that never import a source, a config that imports no other layer."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tfrexp"
MAX_LINES = 300


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): path
            for path in PACKAGE.rglob("*.py")}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Every tfrexp module a file imports, at any level (function-level imports count too). The root
    package `tfrexp` (version, start time, the lazy API) is left out: it imports nothing at module level."""
    modules = _modules()
    tree = ast.parse(path.read_text())
    found = set()
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tfrexp")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tfrexp"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(modules)
            found |= submodules or {node.module}
    return {name for name in found if name in modules and name != "tfrexp"}


def _third_party_imports(source: str) -> set[str]:
    """The top-level names of every package a source imports, at any level (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _imports_the_root_package(source: str) -> bool:
    """`import tfrexp` or `from tfrexp import <not a module>` (its version, its lazy API)."""
    modules = _modules()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(alias.name == "tfrexp" for alias in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "tfrexp" and node.level == 0:
            if any(f"tfrexp.{alias.name}" not in modules for alias in node.names):
                return True
    return False


def _folder(module: str) -> str:
    """tfrexp.records.writer -> tfrexp.records; tfrexp.pipeline -> tfrexp.pipeline (a module is its own room)."""
    path = _modules()[module]
    parts = module.split(".")
    return ".".join(parts[:2]) if path.parent != PACKAGE or path.name == "__init__.py" else module


def _folder_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in _modules().items():
        for imported in _imports(path):
            if _folder(imported) != _folder(module) and _folder(module) != "tfrexp":
                graph[_folder(module)].add(_folder(imported))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for after in sorted(graph.get(node, ())):
            if state.get(after) == 1:
                return trail[trail.index(after):] + [after] if after in trail else [node, after]
            if after not in state and (found := visit(after, trail + [after])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_module_is_over_300_lines():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_root_package_imports_nothing_of_ours_at_start():
    assert _imports(PACKAGE / "__init__.py", top_level_only=True) == set()


def test_only_the_tracking_package_imports_mlflow():
    speaking = sorted(str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                      if "mlflow" in _third_party_imports(path.read_text()))
    assert speaking and all(path.startswith("tfrexp/tracking/") for path in speaking), speaking


def test_an_mlflow_import_is_found_at_any_level():
    assert "mlflow" in _third_party_imports("def f():\n    from mlflow.tracking import MlflowClient\n")
    assert "mlflow" in _third_party_imports("import mlflow.keras\n")
    assert "mlflow" not in _third_party_imports("from tfrexp.tracking import store\n")


def test_nothing_inside_imports_the_root_package():
    through_root = sorted(str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                          if path.parent != PACKAGE or path.name not in {"__init__.py", "__main__.py"}
                          if _imports_the_root_package(path.read_text()))
    assert through_root == []
    assert _imports_the_root_package("import tfrexp\n") and _imports_the_root_package("from tfrexp import __version__\n")
    assert not _imports_the_root_package("from tfrexp import config\n")


def test_no_import_loop_between_folders():
    assert _cycle(_folder_graph()) is None


def test_a_loop_is_found_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_imports_follow_the_data_flow():
    graph = _folder_graph()
    assert "tfrexp.sources" not in graph["tfrexp.records"], "records must not import a source"
    assert graph["tfrexp.config"] <= {"tfrexp.errors"}, "the config imports no other layer"
    # The Ray engine asks tfrexp.ray_head (a leaf the sweepers share) whether its cluster answers.
    assert graph["tfrexp.records"] <= {"tfrexp.config", "tfrexp.errors", "tfrexp.ray_head"}
    # A sweep catches stop signals like a run does: both note them in tfrexp.stop_signals, a leaf like errors.
    assert graph["tfrexp.tracking"] <= {"tfrexp.config", "tfrexp.errors", "tfrexp.stop_signals", "tfrexp.records"}, \
        "tracking logs, it runs nothing"
    assert not graph["tfrexp.stop_signals"] and not graph["tfrexp.errors"] and not graph["tfrexp.ray_head"], "leaves"
    assert "tfrexp.experiment" not in graph["tfrexp.bench"], "the bench calls the API, it does not rebuild runs"


def test_make_help_lists_every_target_with_its_ports_filled_in():
    """It printed `127.0.0.1:$(PORT)` and `$(SERVER_PORT)` as they stand in the Makefile."""
    import subprocess

    shown = subprocess.run(["make", "--no-print-directory", "help", "PORT=5050"], cwd=PACKAGE.parent,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "$(" not in shown.stdout and "http://127.0.0.1:5050" in shown.stdout and "127.0.0.1:5001" in shown.stdout
    assert {line.split()[1] for line in shown.stdout.splitlines()} >= {"train", "test", "sweep", "ui", "server", "bench"}
