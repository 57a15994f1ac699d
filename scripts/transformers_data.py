"""Write the data hybridprune reads instead of importing transformers, from the installed (pinned) version.

    python scripts/transformers_data.py          # rewrite the files
    python scripts/transformers_data.py --check  # exit 1 when a file differs from what this version gives

Files: `checkpoint/conversions.json` (each supported model type's load-time key renamings and merging
conversions) and `architectures/config_defaults.json` (each model type's config field defaults and
attribute aliases). `tests/test_transformers_data.py` runs the check, so a transformers upgrade that
changes either shows up as a failing test, fixed by rerunning this script.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def documents() -> dict[Path, str]:
    """Each data file's path and the text this transformers version gives it."""
    from hybridprune.architectures import ADAPTERS
    from hybridprune.architectures.config_data import DATA as CONFIG_DATA
    from hybridprune.architectures.config_data import table as config_table
    from hybridprune.checkpoint.conversions import DATA as CONVERSIONS_DATA
    from hybridprune.checkpoint.conversions import table as conversion_table

    types = [t for a in ADAPTERS for t in a.model_types]
    text = lambda doc: json.dumps(doc, indent=1, sort_keys=True) + "\n"
    return {CONVERSIONS_DATA: text(conversion_table(types)), CONFIG_DATA: text(config_table(types))}


def main(argv: list[str]) -> int:
    stale = []
    for path, text in documents().items():
        if path.is_file() and path.read_text() == text:
            continue
        if "--check" in argv:
            stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} differs from what the installed transformers gives: run scripts/transformers_data.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
