"""The package layout: no import circles among module-level imports, the public API resolves, the
moved modules left nothing behind at their old paths, and `import hybridprune` stays cheap."""

from __future__ import annotations

import ast
import graphlib
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import hybridprune as hp

SRC = Path(hp.__file__).parent
PUBLIC = ["Budget", "DistillConfig", "Plan", "PlanError", "Scores", "SearchResult", "Selection",
          "UnsupportedArchitecture", "build_run_report", "calibrate", "compare_models", "count_parameters",
          "depth_importance", "distill", "evaluate_loss", "export", "get_adapter", "load_model",
          "measure_generation", "prune", "run_tasks", "search", "select"]


def _module_name(path: Path, src: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _runtime_imports(tree: ast.Module):
    """Import statements that run when the module is imported: module level, outside functions and
    outside `if TYPE_CHECKING:` (lazy imports inside functions cannot form an import-time circle)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "TYPE_CHECKING" not in test:
                todo += node.body
            todo += node.orelse
        elif isinstance(node, (ast.Try, ast.With)):
            todo += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            for handler in getattr(node, "handlers", []):
                todo += handler.body


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the hybridprune modules it imports at import time. The packages above a module imported
    are not counted: Python has them in `sys.modules` (half-initialised) before it runs their submodules."""
    files = {_module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    modules = {name for name, _ in files}
    graph: dict[str, set[str]] = {}
    for (name, is_pkg), path in files.items():
        package = name if is_pkg else name.rpartition(".")[0]
        deps = graph.setdefault(name, set())
        for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # a submodule named is the dependency; any other name, the module it is in
                sub = f"{target}.{a.name}"
                deps |= {sub} if sub in modules else {target} & modules
        deps.discard(name)
    return graph


def test_no_import_circles():
    try:
        tuple(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import circle among module-level imports: {' -> '.join(e.args[1])}")


def test_a_new_circle_is_caught(tmp_path):
    pkg = tmp_path / "hybridprune"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import f\n")
    (pkg / "sub" / "a.py").write_text("from ..b import g\n\ndef f():\n    from .. import b\n")
    (pkg / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from .sub import a\nfrom .sub.a import f\n")
    graph = import_graph(pkg)
    assert graph["hybridprune.b"] == {"hybridprune.sub.a"}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


def test_every_public_name_resolves_in_a_fresh_process():
    code = ("import hybridprune as hp\n"
            "missing = [n for n in hp.__all__ if getattr(hp, n, None) is None]\n"
            "assert not missing, missing\n"
            "print(len(hp.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(PUBLIC)
    assert hp.__all__ == PUBLIC


@pytest.mark.parametrize("old", ["checkpoints", "checkpoint_files", "safetensors_io", "keymap", "hub",
                                 "config_style", "fingerprint", "carry", "forecast", "fsutil", "fserrors",
                                 "cleanup", "signals", "pipeline"])
def test_moved_modules_left_no_shim(old):
    assert not (SRC / f"{old}.py").exists()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"hybridprune.{old}")


def test_import_hybridprune_stays_cheap():
    code = "import sys, hybridprune; print(sorted(m for m in sys.modules if m.startswith(('hybridprune', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == ["hybridprune"]
