"""Reader of format version 1 (the manifest as JSON in the safetensors metadata, one
safetensors tensor per raw stream). Kept so that files written by modelzip 0.1 load."""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from ..ops.pack import packed_nbytes, unpack
from .sparse import decode_pattern


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise FormatError(msg)


def _lookup(table: dict[str, Any], name: Any) -> Any:
    """``table[name]`` for a string name, None for anything else (a dict is unhashable)."""
    return table.get(name) if isinstance(name, str) else None


def parse_manifest(text: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError):
        raise FormatError("manifest is not valid JSON") from None
    _need(isinstance(manifest, dict) and manifest.get("version") == 1, "bad v1 manifest")
    return manifest


def _stream(streams: dict[str, bytes], ref: Any, used: set[str]) -> bytes:
    _need(isinstance(ref, dict), "stream reference must be an object")
    sid, clen = ref.get("id"), ref.get("len")
    _need(isinstance(sid, str) and sid in streams, f"missing stream {sid!r}")
    _need(sid not in used, f"stream {sid} referenced twice")
    used.add(sid)
    data = streams[sid]
    _need(isinstance(clen, int) and clen == len(data), f"stream {sid} length mismatch")
    _need(ref.get("crc32") == zlib.crc32(data), f"stream {sid} checksum mismatch")
    _need(ref.get("coder") == "raw" and ref.get("raw_len") == len(data),
          f"stream {sid}: version 1 files hold raw streams only")
    return data


def _values(v: Any, n: int, dtype: torch.dtype, streams: dict[str, bytes], used: set[str],
            dtypes: dict[str, torch.dtype]) -> tuple[torch.Tensor, tuple[int, bool] | None]:
    _need(isinstance(v, dict), "bad value encoding")
    raw = _stream(streams, v.get("data"), used)
    if v.get("codec") == "dense":
        store = _lookup(dtypes, v.get("store"))
        _need(store is not None and store.is_floating_point, "bad dense storage dtype")
        _need(len(raw) == n * store.itemsize, "dense stream has the wrong size")
        t = torch.frombuffer(bytearray(raw), dtype=store) if n else torch.empty(0, dtype=store)
        return t.to(dtype), None
    if v.get("codec") == "int":
        bits, signed = v.get("bits"), v.get("signed")
        _need(isinstance(bits, int) and 1 <= bits <= 32 and isinstance(signed, bool),
              "bad integer code width")
        _need(len(raw) == packed_nbytes(n, bits), "integer stream has the wrong size")
        codes = unpack(raw, bits, n, signed)
        return codes_tensor(codes, dtype), (bits, signed)
    raise FormatError(f"unknown value codec {v.get('codec')!r}")


def codes_tensor(codes: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Decoded integer codes as a ``dtype`` tensor, refused when they do not fit it
    (shared by the v1 and v2 readers)."""
    if dtype == torch.bool:
        _need(bool(np.all((codes == 0) | (codes == 1))), "bool tensor holds non-0/1")
    elif not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        _need(codes.size == 0 or (codes.min() >= info.min and codes.max() <= info.max),
              "codes outside their dtype")
    return torch.from_numpy(codes).to(dtype)


def decode_tensors(manifest: dict[str, Any], streams: dict[str, bytes],
                   dtypes: dict[str, torch.dtype], shape_of: Any):
    """(tensors, parameter keys, declared bits) of a version-1 manifest."""
    entries = manifest["tensors"]
    out: dict[str, torch.Tensor] = {}
    params: set[str] = set()
    bits: dict[str, tuple[int, bool]] = {}
    used: set[str] = set()
    order = sorted(entries, key=lambda e: 0 if isinstance(e, dict) and
                   e.get("codec") == "pattern" else 1)
    for e in order:
        _need(isinstance(e, dict) and isinstance(e.get("key"), str), "bad tensor entry")
        key = e["key"]
        _need(key not in out, f"tensor {key!r} appears twice")
        dtype = _lookup(dtypes, e.get("dtype"))
        _need(dtype is not None, f"bad dtype for {key!r}")
        shape, n = shape_of(e.get("shape"), key)
        codec, width = e.get("codec"), None
        if codec == "pattern":
            _need(dtype == torch.bool and isinstance(e.get("pattern"), dict), "bad pattern")
            raw = _stream(streams, e.get("data"), used)
            t = torch.from_numpy(decode_pattern(e["pattern"], raw, n))
        elif codec == "masked":
            mask = _lookup(out, e.get("mask"))
            _need(mask is not None and mask.dtype == torch.bool and mask.numel() == n,
                  f"mask of {key!r} missing or wrong")
            mask = mask.reshape(shape)
            vals, width = _values(e.get("values"), int(mask.sum()), dtype, streams, used, dtypes)
            t = torch.zeros(shape, dtype=dtype)
            t[mask] = vals
        else:
            t, width = _values(e, n, dtype, streams, used, dtypes)
        out[key] = t.reshape(shape)
        if width is not None:
            bits[key] = width
        if e.get("param") is True:
            params.add(key)
    _need(used == set(streams), "file holds streams that no tensor uses")
    return out, params, bits
