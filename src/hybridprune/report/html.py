"""One self-contained HTML page for a `Report`: inline CSS, figures embedded as base64 data URIs.

Text sections use a small subset of Markdown (paragraphs, `- ` lists, fenced code, `inline code`,
**bold**), enough for what the reports say; everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import re

#: in both report files: how `build_run_report` knows a report.md/html it may replace is its own
GENERATOR_MARK = "generator: hybridprune"

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 12px; }
code { background: #f1f1f1; padding: 0 3px; } figure { margin: 0.8em 0; }
img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #555; font-size: 13px; }
"""


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def text_to_html(text: str) -> str:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            blocks.append("<ul>" + "".join(items) + "</ul>")
        elif line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("```", "- ")):
                para.append(lines[i])
                i += 1
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
        else:
            i += 1
    return "\n".join(blocks)


def _data_uri(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render(report) -> str:
    body = [f"<h1>{html.escape(report.title)}</h1>", text_to_html(report.intro)]
    for s in report.sections:
        body.append(f"<h2>{html.escape(s.heading)}</h2>")
        if s.kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in s.columns)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in s.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            if s.text:
                body.append(text_to_html(s.text))
        elif s.kind == "figure":
            cap = f"<figcaption>{_inline(s.text)}</figcaption>" if s.text else ""
            body.append(f'<figure><img src="{_data_uri(s.image)}" alt="{html.escape(s.heading)}">{cap}</figure>')
        else:
            body.append(text_to_html(s.text))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"hybridprune\"><!-- {GENERATOR_MARK} -->"
            f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(b for b in body if b) + "\n</body></html>\n")
