"""``python -m modelzip`` (and ``torchrun -m modelzip``): the command line."""

import sys

from .cli import main

sys.exit(main())
