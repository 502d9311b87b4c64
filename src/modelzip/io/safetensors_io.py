"""Writing uint8 streams to a safetensors file, and a strict reader for untrusted files.

The reader parses the (simple) safetensors layout itself so that every length and offset
is validated before use and any defect is a FormatError.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path

from ..errors import FormatError, WriteError

MAX_HEADER = 64 << 20


TMP_SUFFIX = ".mzip-tmp"
_TMP_RE = re.compile(r"\.(\d+)-[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX) + "$")
_TMP_PREFIX_CHARS = 100  # of the target's name, so that the temp name stays legal


def _tmp_prefix(path: Path) -> str:
    return f".{path.name[:_TMP_PREFIX_CHARS]}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove temp files that an interrupted save to ``path`` left behind: only names of
    our own pattern (``.<name>.<pid>-<random>.mzip-tmp``) whose writing process is gone."""
    path = Path(path)
    folder, prefix, removed = path.parent if str(path.parent) else Path("."), \
        _tmp_prefix(path), []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return removed
    for n in names:
        m = _TMP_RE.search(n[len(prefix) - 1:])
        if m and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(folder / n)
                removed.append(folder / n)
            except OSError:
                pass
    return removed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and a rename.

    Any OS failure (full disk, read-only folder, name too long...) raises WriteError
    naming the path; the old file stays intact and no temp file is left. Temp files of
    earlier saves to the same path whose process died (a kill mid-save) are removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        if path.is_dir():
            raise WriteError(f"cannot write {path}: it is a directory")
        if not folder.is_dir():
            raise WriteError(f"cannot write {path}: folder {folder} does not exist")
        clean_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}-",
                                   suffix=TMP_SUFFIX, dir=folder)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        tmp = None
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def dumps(streams: dict[str, bytes], metadata: dict[str, str]) -> bytes:
    """safetensors bytes of uint8 ``streams`` with ``metadata``, byte-for-byte
    deterministic: keys sorted, tensors laid out in name order, header space-padded to
    8 bytes as safetensors does (the safetensors library orders metadata by hash)."""
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    pos = 0
    for name in sorted(streams):
        n = len(streams[name])
        header[name] = {"dtype": "U8", "shape": [n], "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return b"".join([struct.pack("<Q", len(text)), text,
                     *(bytes(streams[k]) for k in sorted(streams))])


def loads(data: bytes) -> tuple[dict[str, bytes], dict[str, str]]:
    """(stream name -> bytes, metadata) from safetensors bytes holding only U8 tensors."""
    if len(data) < 8:
        raise FormatError("file too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise FormatError("safetensors header length is out of range")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
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
