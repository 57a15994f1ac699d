"""A self-contained Markdown report: a summary table, sections of text, and PNG figures beside it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Report:
    title: str
    intro: str = ""
    sections: list[tuple[str, str]] = field(default_factory=list)

    def add_table(self, heading: str, columns: list[str], rows: list[list[object]], note: str = "") -> None:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.sections.append((heading, "\n".join(lines) + (f"\n\n{note}" if note else "")))

    def add_text(self, heading: str, text: str) -> None:
        self.sections.append((heading, text))

    def add_figure(self, heading: str, image: str | Path, out_dir: str | Path, caption: str = "") -> None:
        """Copy `image` next to the report (if it is elsewhere) and link it."""
        image, out_dir = Path(image), Path(out_dir)
        if not image.is_file():
            return
        target = out_dir / image.name
        if image.resolve() != target.resolve():
            shutil.copy2(image, target)
        self.sections.append((heading, f"![{heading}]({target.name})" + (f"\n\n{caption}" if caption else "")))

    def write(self, path: str | Path) -> Path:
        parts = [f"# {self.title}", self.intro] + [f"## {h}\n\n{body}" for h, body in self.sections]
        path = Path(path)
        path.write_text("\n\n".join(p for p in parts if p) + "\n")
        return path
