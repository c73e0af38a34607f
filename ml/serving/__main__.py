"""`python -m ml.serving [--dataset NAME] [--host H] [--port P]`: the same as `driftwatch serve`."""

from __future__ import annotations

import sys

from ml.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
