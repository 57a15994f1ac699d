"""`python -m hybridprune ...` (and `torchrun -m hybridprune ...`): the command line."""

from __future__ import annotations

import sys

from hybridprune.cli import main

if __name__ == "__main__":
    sys.argv[0] = "hybridprune"
    main()
