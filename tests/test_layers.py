"""Imports point down the layers of `hybridprune.layers`: every `import` in every module, at module
level or inside a function, method or class (only `if TYPE_CHECKING:` blocks are skipped), is checked
against the order, and neither the packages nor the modules form a circle (a lazy import closing one
works until someone moves it to the top of the file)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import hybridprune as hp
from hybridprune.layers import ALLOWED, LAYERS

SRC = Path(hp.__file__).parent


def _module(path: Path, src: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def unit(module: str) -> str:
    """The layer a module belongs to: its top package, a top-level module's own name, or `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree: ast.Module):
    """(import node, at import time?) for every import outside `if TYPE_CHECKING:`."""
    todo = [(node, True) for node in tree.body]
    while todo:
        node, now = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, now
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += [(n, now) for n in node.orelse]
            continue
        later = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        todo += [(n, now and not later) for n in ast.iter_child_nodes(node)]


def edges(src: Path = SRC):
    """(module, line, imported module, at import time?) for every import of a module of the package."""
    files = {_module(p, src): p for p in sorted(src.rglob("*.py"))}
    modules = {name for name, _ in files}
    root = src.name
    for (name, is_pkg), path in files.items():
        package = name if is_pkg else name.rpartition(".")[0]
        for node, now in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                if target == root or target.startswith(root + "."):
                    while target not in modules:  # `import a.b.c` of a name, not a module
                        target = target.rpartition(".")[0]
                    yield name, node.lineno, target, now


def problems(src: Path = SRC, layers=LAYERS, allowed=ALLOWED) -> list[str]:
    tier = {name: i for i, names in enumerate(layers) for name in names}
    found, packages, at_import, lazy_too = [], {}, {}, {}
    for module, line, target, now in edges(src):
        a, b = unit(module), unit(target)
        if target != module:
            lazy_too.setdefault(module, set()).add(target)
            if now:
                at_import.setdefault(module, set()).add(target)
        if a == b:
            continue
        for name in (a, b):
            if name not in tier:
                found.append(f"{name} is in no layer (hybridprune/layers.py)")
        if (a, b) in allowed or a not in tier or b not in tier:
            continue
        packages.setdefault(a, set()).add(b)
        if tier[b] <= tier[a]:
            where = "beside" if tier[b] == tier[a] else "above"
            found.append(f"{module}:{line} imports {target}: {b} is {where} {a}")
    for graph, what in ((packages, "packages"), (at_import, "module-level imports"),
                        (lazy_too, "modules, lazy imports included")):
        try:
            tuple(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as e:
            found.append(f"import circle among {what}: {' -> '.join(e.args[1])}")
    return sorted(set(found))


def test_imports_point_down_the_layers():
    assert problems() == []


def test_every_package_and_top_level_module_has_a_layer():
    named = [name for names in LAYERS for name in names]
    assert len(named) == len(set(named))
    present = {p.stem if p.is_file() else p.name for p in SRC.iterdir()
               if (p.suffix == ".py") or (p / "__init__.py").exists()}
    assert present == set(named)


def test_every_allowed_edge_says_why_and_is_still_needed():
    used = {(unit(m), unit(t)) for m, _, t, _ in edges()}
    for edge, reason in ALLOWED.items():
        assert isinstance(reason, str) and len(reason) > 20, edge
        assert edge in used, f"{edge} is allowed but no longer imported: drop it from ALLOWED"


def test_the_checker_catches_a_lazy_upward_import_and_circles(tmp_path):
    pkg = tmp_path / "hybridprune"
    for sub in ("top", "low"):
        (pkg / sub).mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "top" / "__init__.py").write_text("from ..low import f\n")
    (pkg / "low" / "__init__.py").write_text("def f():\n    return 1\n")
    (pkg / "low" / "a.py").write_text("class C:\n    def m(self):\n        from ..top import g\n")
    (pkg / "low" / "b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    from hybridprune.top import x\n"
                                      "from . import c\n")
    (pkg / "low" / "c.py").write_text("from .b import y\n")
    layers = [("top",), ("low",), ("__init__",)]
    found = problems(pkg, layers, {})
    assert "hybridprune.low.a:3 imports hybridprune.top: top is above low" in found
    assert not any("low.b:3" in p for p in found)  # under TYPE_CHECKING
    assert any(p.startswith("import circle among packages") for p in found)
    assert any(p.startswith("import circle among module-level imports") and "low.b" in p for p in found)
    assert any(p.startswith("import circle among modules, lazy imports included") for p in found)
    allowed = problems(pkg, layers, {("low", "top"): "a reason for the test"})
    assert len(allowed) == 2 and all("low.b" in p and "low.c" in p for p in allowed)
