"""Writing uint8 streams to a safetensors file, and a strict reader for untrusted files.

The reader parses the (simple) safetensors layout itself so that every length and offset
is validated before use and any defect is a FormatError.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save as st_save

from ..errors import FormatError

MAX_HEADER = 64 << 20


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise FormatError(f"{path} is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FormatError(f"folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps(streams: dict[str, bytes], metadata: dict[str, str]) -> bytes:
    arrays = {k: np.frombuffer(v, dtype=np.uint8).copy() for k, v in streams.items()}
    return st_save(arrays, metadata=metadata)


def loads(data: bytes) -> tuple[dict[str, bytes], dict[str, str]]:
    """(stream name -> bytes, metadata) from safetensors bytes holding only U8 tensors."""
    if len(data) < 8:
        raise FormatError("file too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise FormatError("safetensors header length is out of range")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise FormatError("safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("safetensors metadata must map strings to strings")
    body = data[8 + n :]
    streams: dict[str, bytes] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or info.get("dtype") != "U8":
            raise FormatError(f"stream {name!r} is not a uint8 tensor")
        offs, shape = info.get("data_offsets"), info.get("shape")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise FormatError(f"stream {name!r} has bad offsets")
        b, e = offs
        if not 0 <= b <= e <= len(body) or shape != [e - b]:
            raise FormatError(f"stream {name!r} offsets/shape out of range")
        streams[name] = body[b:e]
    return streams, meta
