"""Reading a recipe file: YAML's safe loader, with the line of every key kept for messages.

PyYAML's node tree carries marks; the document is built from that same tree by the safe constructor
(so `!!python` tags are refused, never run), and a walk over it records `path -> line` and refuses a
key given twice (which plain YAML loading silently resolves to the last one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot be run: the message names the file, the line and the key."""


Path_ = tuple  # a key path: ("distill", "lr") or ("rounds", 1, "params")


def _where(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the recipe"


def _walk(node, path: Path_, lines: dict, file: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(f"{file}:{line}: {_where((*path, key))} is given twice (also on line {seen[key]}); "
                                  "keep one")
            seen[key] = line
            _walk(value_node, (*path, key), lines, file)
            lines[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, file)


def load_text(text: str, file: str = "recipe") -> tuple[Any, dict[Path_, int]]:
    """(the document, its key lines) of YAML `text`; `file` names it in messages."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError(f"{file} is empty; a recipe needs at least `model:` and one stage")
        lines: dict[Path_, int] = {}
        _walk(node, (), lines, file)
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
