"""Writing uint8 streams to a safetensors file atomically, and the one strict parser of
the safetensors layout for untrusted files (used by the .mzip reader and by signing.py).

The parser reads the (simple) layout itself so that every length and offset is validated
before use and any defect is a FormatError.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _check_target(path: Path, folder: Path) -> None:
    if path.is_dir():
        raise WriteError(f"cannot write {path}: it is a directory")
    if not folder.is_dir():
        raise WriteError(f"cannot write {path}: folder {folder} does not exist")


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[int]:
    """A file descriptor open on a new temp file beside ``path``; when the block ends
    normally the file is fsynced, given the usual permissions and renamed onto ``path``.

    Any OS failure (full disk, read-only folder, name too long...) raises WriteError
    naming the path; on any error the old file stays intact and no temp file is left.
    Temp files of earlier saves to the same path whose process died are removed first.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        _check_target(path, folder)
        clean_stale(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{_tmp_prefix(path)}{os.getpid()}-",
                                   suffix=TMP_SUFFIX, dir=folder)
        try:
            yield fd
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


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and a rename
    (see :func:`atomic_file` for the failure behaviour)."""
    with atomic_file(path) as fd:
        write_all(fd, data)


# ------------------------------------------------------------------------- layout
def header(sizes: dict[str, int], metadata: dict[str, str]) -> bytes:
    """The 8-byte length + JSON header of uint8 tensors of ``sizes`` bytes, byte-for-byte
    deterministic: keys sorted, tensors laid out in name order, header space-padded to
    8 bytes as safetensors does (the safetensors library orders metadata by hash)."""
    head: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    pos = 0
    for name in sorted(sizes):
        n = sizes[name]
        head[name] = {"dtype": "U8", "shape": [n], "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(head, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def dumps(streams: dict[str, bytes], metadata: dict[str, str]) -> bytes:
    """safetensors bytes of uint8 ``streams`` with ``metadata`` (layout of :func:`header`)."""
    return b"".join([header({k: len(v) for k, v in streams.items()}, metadata),
                     *(bytes(streams[k]) for k in sorted(streams))])


# ------------------------------------------------------------------------ parsing
Entry = tuple[str, list, int, int]  # dtype, shape, begin, end (within the data area)


def parse(data: bytes | memoryview) -> tuple[dict[str, Entry], dict[str, str], memoryview]:
    """(name -> (dtype, shape, begin, end), metadata, data area) of safetensors bytes.

    The one parser of the safetensors layout (the .mzip reader and the signature code
    both use it): header length and JSON, metadata of strings, every entry's dtype,
    shape and offsets checked, offsets within the data area. ``data`` may be a
    memoryview (e.g. of a memory-mapped file); the data area is a view, never a copy."""
    view = memoryview(data)
    if len(view) < 8:
        raise FormatError("file too short to be a safetensors file")
    (n,) = struct.unpack("<Q", view[:8])
    if n > MAX_HEADER or 8 + n > len(view):
        raise FormatError("safetensors header length is out of range")
    try:
        head = json.loads(bytes(view[8: 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FormatError("safetensors header is not valid JSON") from None
    if not isinstance(head, dict):
        raise FormatError("safetensors header is not a JSON object")
    meta = head.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("safetensors metadata must map strings to strings")
    body = view[8 + n:]
    entries: dict[str, Entry] = {}
    for name, info in head.items():
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if (not isinstance(offs, list) or len(offs) != 2 or not isinstance(info.get("dtype"), str)
                or not isinstance(info.get("shape"), list)
                or not all(type(o) is int for o in offs)):
            raise FormatError(f"tensor {name!r} has a bad header entry")
        b, e = offs
        if not 0 <= b <= e <= len(body):
            raise FormatError(f"tensor {name!r} offsets out of range")
        entries[name] = (info["dtype"], info["shape"], b, e)
    return entries, meta, body


def check_tiled(entries: dict[str, Entry], body: memoryview) -> None:
    """The tensors tile the data area exactly: no gaps, overlaps or trailing bytes."""
    pos = 0
    for b, e, name in sorted((b, e, name) for name, (_, _, b, e) in entries.items()):
        if b != pos:
            raise FormatError(f"tensor {name!r} does not follow the previous one")
        pos = e
    if pos != len(body):
        raise FormatError("the data area has bytes that no tensor covers")


def loads(data: bytes | memoryview) -> tuple[dict[str, memoryview], dict[str, str]]:
    """(stream name -> bytes, metadata) from safetensors bytes holding only U8 tensors.
    Given a memoryview (e.g. of a memory-mapped file) the streams are views into it,
    not copies; given bytes, they are bytes."""
    entries, meta, body = parse(data)
    view = isinstance(data, memoryview)
    streams = {}
    for name, (dtype, shape, b, e) in entries.items():
        if dtype != "U8":
            raise FormatError(f"stream {name!r} is not a uint8 tensor")
        if shape != [e - b]:
            raise FormatError(f"stream {name!r} offsets/shape out of range")
        streams[name] = body[b:e] if view else bytes(body[b:e])
    return streams, meta
