"""`python -m worker` is the same as the `steel-worker` console script."""

from __future__ import annotations

import sys

from worker.cli import main

sys.exit(main())
