"""The .mzip container: a safetensors file of uint8 streams plus a JSON manifest.

This module is the public face of the format: ``save`` / ``dumps`` write, ``load`` /
``loads`` read, ``read_manifest`` / ``read_contents`` inspect. The work is split by step:
manifest.py (container, constants, checks), writer.py, reader.py, restore.py (tensors into
a model), arch.py (architecture records) and legacy_v1.py (frozen reader of version 1).
See docs/format.md. Loading never runs code from the file: module classes,
re-parametrisations, architectures and stream coders are looked up in allowlists, every
length, offset, shape and checksum is checked before use, and a model built by user code
(a ``module:factory`` record) is rebuilt only when the caller passes ``trust_code=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .manifest import FORMAT, VERSION, Contents
from .reader import decode_tensors, read, read_bytes, read_contents, read_manifest
from .restore import restore
from .safetensors_io import write_atomic
from .signing import sign_bytes, verify_bytes
from .writer import dumps
from .writer import save as write_file


def save(model: nn.Module, path: str | os.PathLike, *, entropy: str | tuple[str, ...] = "auto",
         half: bool = False, info: dict[str, Any] | None = None,
         sign_key: Any = None) -> int:
    """Write ``model`` to ``path`` as a .mzip (atomically); returns the file's size in bytes.

    ``sign_key`` (an Ed25519 private key, PEM bytes or a key file) embeds a signature of the
    payload that ``load(..., verify_key=)`` and ``modelzip verify`` check.
    """
    if sign_key is None:
        return write_file(model, path, entropy=entropy, half=half, info=info)
    data = sign_bytes(dumps(model, entropy=entropy, half=half, info=info), sign_key)
    write_atomic(path, data)
    return len(data)


def load(path: str | os.PathLike, model: nn.Module | None = None, *,
         trust_code: bool = False, verify_key: Any = None) -> nn.Module:
    """Rebuild the model stored in ``path``.

    ``model=None`` rebuilds the architecture recorded in the file (zoo, NAS and Hugging
    Face models; a user factory only with ``trust_code=True``, since that imports and
    runs its code); otherwise the given model (same architecture) is filled in place.
    With ``verify_key`` the file must carry a valid signature by that key
    (``SignatureError`` otherwise) before anything is decoded.
    """
    if verify_key is not None:
        data = Path(path).read_bytes()
        verify_bytes(data, verify_key)
        return restore(read_bytes(data), model, trust_code=trust_code)
    return restore(read_contents(path), model, trust_code=trust_code)


def loads(data: bytes, model: nn.Module | None = None, *,
          trust_code: bool = False) -> nn.Module:
    """As :func:`load`, from the bytes of a .mzip (what :func:`dumps` returns)."""
    return restore(read_bytes(data), model, trust_code=trust_code)


__all__ = ["FORMAT", "VERSION", "Contents", "decode_tensors", "dumps", "load", "loads",
           "read", "read_contents", "read_manifest", "save"]
