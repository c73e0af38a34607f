"""`python -m devstack up | down | demo | backfill`: see devstack.cli."""

import sys

from devstack.cli import main

sys.exit(main())
