"""Studies that remember the command that made them, so `modelzip worker` can join them.

`auto` and `search` record, in the study's user attributes, what kind of job it is
(``mz_kind``), the arguments that define its objective (``mz_job``: model, data, budget...;
file paths made absolute) and its total of trials (``mz_trials``, which a later run may
raise). A worker rebuilds the same objective from them on any machine that sees the same
files and storage.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..distributed.storage import StorageError, open_storage
from ..distributed.study import create_or_load_study, load_study

KIND, JOB, TRIALS = "mz_kind", "mz_job", "mz_trials"
PATH_KEYS = ("weights", "data_root", "space", "data", "model")


def spec(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    """The JSON record of ``keys`` of ``args``; existing files and folders made absolute."""
    out: dict[str, Any] = {}
    for k in keys:
        v = getattr(args, k)
        if k in PATH_KEYS and isinstance(v, str) and ("/" in v or "." in v) and Path(v).exists():
            v = str(Path(v).resolve())
        out[k] = v
    return out


def record(args: argparse.Namespace, kind: str, keys: tuple[str, ...], *,
           storage: Any, study: str, directions: list[str]) -> Any:
    """Create (or check) the study of this command and record its job; returns the storage.

    Raises ConfigError when the study was made by a different job."""
    store = open_storage(storage)
    st = create_or_load_study(store, study, directions=directions,
                              attrs={KIND: kind, JOB: spec(args, keys)})
    st.set_user_attr(TRIALS, int(args.trials))
    return store


def recorded(storage: str, study: str) -> tuple[str, argparse.Namespace, int]:
    """(kind, arguments, total of trials) recorded in ``study``, for a worker."""
    st = load_study(open_storage(storage), study)
    attrs = st.user_attrs
    if KIND not in attrs or JOB not in attrs:
        raise StorageError(f"study {study!r} was not made by 'modelzip auto' or "
                           "'modelzip search': nothing to rebuild its trials from")
    return attrs[KIND], argparse.Namespace(**attrs[JOB]), int(attrs.get(TRIALS, 1))
