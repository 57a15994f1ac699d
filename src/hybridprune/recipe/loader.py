"""Reading a recipe file: YAML's safe loader, with the line of every key kept for messages.

PyYAML's node tree carries marks; the document is built from that same tree by the safe constructor
(so `!!python` tags are refused, never run), and a walk over it records `path -> line` and refuses a
key given twice (which plain YAML loading silently resolves to the last one).

A recipe may come from someone else, so its YAML is read as untrusted input: before the node tree is
built, one pass over the parser's events (iterative: no recursion to exhaust) refuses nesting deeper
than any recipe needs and an alias (`*name`) of a mapping or list (a recipe never needs one, and nested
aliases expand exponentially: "billion laughs"); an alias of a scalar stays allowed. The walk over the
tree is iterative too, visits each node once, and refuses a key that is not a scalar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..output.documents import YAML_MAX_DEPTH, yaml_problem


class RecipeError(ValueError):
    """A recipe that cannot be run: the message names the file, the line and the key."""


Path_ = tuple  # a key path: ("distill", "lr") or ("rounds", 1, "params")

MAX_DEPTH = YAML_MAX_DEPTH


def _where(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the recipe"


def _check_events(text: str, file: str) -> None:
    """Refuse nesting past `MAX_DEPTH` and aliases of mappings or lists (`output.documents.yaml_problem`)."""
    found = yaml_problem(text)
    if found:
        line, what = found
        if what.startswith("nested"):
            what += "; a recipe needs a few (e.g. rounds[0].distill.lr)"
        else:
            what = (what.split(";")[0] + "; recipes do not use aliases (or `<<` merges) of mappings or lists: "
                    "write the values out")
        raise RecipeError(f"{file}:{line}: {what}")


def _walk(root, lines: dict, file: str) -> None:
    """Record the line of every key path, refusing a key given twice or one that is not a scalar."""
    seen_nodes: set[int] = set()
    todo = [(root, ())]
    while todo:
        node, path = todo.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if not isinstance(node, yaml.CollectionNode):
            continue
        if id(node) in seen_nodes:  # an alias that slipped past `_check_events`: never expanded twice
            raise RecipeError(f"{file}:{node.start_mark.line + 1}: {_where(path)} repeats a mapping or list; "
                              "recipes do not use aliases of mappings or lists: write the values out")
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo.extend(((item, (*path, i)) for i, item in reversed(list(enumerate(node.value)))))
            continue
        seen: dict[Any, int] = {}
        children = []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise RecipeError(f"{file}:{line}: a key of {_where(path)} is a {kind}; keys are plain names "
                                  "(e.g. lr:)")
            key = key_node.value
            if key in seen:
                raise RecipeError(f"{file}:{line}: {_where((*path, key))} is given twice (also on line {seen[key]}); "
                                  "keep one")
            seen[key] = line
            lines[(*path, key)] = line
            children.append((value_node, (*path, key)))
        todo.extend(reversed(children))


def load_text(text: str, file: str = "recipe") -> tuple[Any, dict[Path_, int]]:
    """(the document, its key lines) of YAML `text`; `file` names it in messages."""
    loader = yaml.SafeLoader(text)
    try:
        _check_events(text, file)
        node = loader.get_single_node()
        if node is None:
            raise RecipeError(f"{file} is empty; a recipe needs at least `model:` and one stage")
        lines: dict[Path_, int] = {}
        _walk(node, lines, file)
        doc = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{file}{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{file}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    return doc, lines


def read_text(path: str | Path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"no recipe at {path}; give a recipe YAML file (see recipes/)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe {path}: {exc}") from None


def load_file(path: str | Path) -> tuple[Any, dict[Path_, int]]:
    return load_text(read_text(path), str(path))
