"""A report as a list of sections (text, tables, figures), written as Markdown and as one HTML page.

The Markdown links its PNG figures, copied next to it; the HTML embeds them as data URIs, so the page
is one self-contained file that can be mailed or archived. Both carry `GENERATOR_MARK`, which is how
`hybridprune report` knows a file it may replace was written by hybridprune.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .html import GENERATOR_MARK, render  # noqa: F401 - GENERATOR_MARK is imported from here too


@dataclass
class Section:
    heading: str
    kind: str  # "text" | "table" | "figure"
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    image: Path | None = None


@dataclass
class Report:
    title: str
    intro: str = ""
    sections: list[Section] = field(default_factory=list)

    def add_table(self, heading: str, columns: list[str], rows: list[list[object]], note: str = "") -> None:
        self.sections.append(Section(heading, "table", text=note, columns=[str(c) for c in columns],
                                     rows=[[str(c) for c in row] for row in rows]))

    def add_text(self, heading: str, text: str) -> None:
        self.sections.append(Section(heading, "text", text=text))

    def add_figure(self, heading: str, image: str | Path | None, out_dir: str | Path | None = None,
                   caption: str = "") -> None:
        """Add a PNG (skipped if it does not exist); `out_dir` is accepted for compatibility and unused."""
        if image is None or not Path(image).is_file():
            return
        self.sections.append(Section(heading, "figure", text=caption, image=Path(image)))

    @property
    def figures(self) -> list[Path]:
        return [s.image for s in self.sections if s.kind == "figure" and s.image is not None]

    def markdown(self, figure_prefix: str = "") -> str:
        """The report as Markdown; figures are linked as `figure_prefix + file name`."""
        parts = [f"<!-- {GENERATOR_MARK} -->", f"# {self.title}", self.intro]
        for s in self.sections:
            if s.kind == "table":
                lines = ["| " + " | ".join(_md_cell(c) for c in s.columns) + " |", "|" + "---|" * len(s.columns)]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.rows]
                body = "\n".join(lines) + (f"\n\n{s.text}" if s.text else "")
            elif s.kind == "figure":
                body = f"![{s.heading}]({figure_prefix}{s.image.name})" + (f"\n\n{s.text}" if s.text else "")
            else:
                body = s.text
            parts.append(f"## {s.heading}\n\n{body}")
        return "\n\n".join(p for p in parts if p) + "\n"

    def html(self) -> str:
        return render(self)

    def write(self, path: str | Path, *, figure_dir: str | None = None) -> Path:
        """Write the Markdown to `path`, copying figures next to it (or into `figure_dir` beside it)."""
        path = Path(path)
        target_dir = path.parent / figure_dir if figure_dir else path.parent
        if self.figures:
            target_dir.mkdir(parents=True, exist_ok=True)
        for image in self.figures:
            target = target_dir / image.name
            if image.resolve() != target.resolve():
                shutil.copy2(image, target)
        write_text_atomic(path, self.markdown(f"{figure_dir}/" if figure_dir else ""))
        return path

    def write_html(self, path: str | Path) -> Path:
        path = Path(path)
        write_text_atomic(path, self.html())
        return path


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a temporary sibling and rename it into place: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
