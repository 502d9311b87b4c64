"""``python -m modelzip``: the command line (same as the ``modelzip`` script)."""

import sys

from .cli import main

sys.exit(main())
