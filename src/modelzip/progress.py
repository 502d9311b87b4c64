"""Progress bars that only appear where a person is watching.

A bar is shown when the caller asks for progress, stderr is a terminal, and neither
``TQDM_DISABLE`` nor ``MODELZIP_NO_PROGRESS`` is set; it is labelled with what is running.
Piped output, CI logs and ``--no-progress`` stay free of bar noise.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def wanted(progress: bool) -> bool:
    """Whether a bar should be drawn for a caller that asked for ``progress``."""
    if not progress or os.environ.get("TQDM_DISABLE") or os.environ.get("MODELZIP_NO_PROGRESS"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable: Any = None, *, desc: str, progress: bool = True, **kw: Any) -> tqdm:
    """A tqdm bar labelled ``desc``, disabled unless :func:`wanted`."""
    kw.setdefault("leave", False)
    return tqdm(iterable, desc=desc, disable=not wanted(progress), **kw)


def note(message: str, *, progress: bool = True) -> None:
    """One status line on stderr (also when not a terminal: long work says what it does)."""
    if progress and not os.environ.get("MODELZIP_NO_PROGRESS"):
        print(message, file=sys.stderr, flush=True)
