"""Reading a .mzip: the container (manifest.py) and every tensor it stores, decoded and
checked (widths, counts, shapes, masks, element budget) before any allocation."""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from . import legacy_v1
from .manifest import (
    DTYPE_NAMES,
    DTYPES,
    ELEMENTS_PER_BYTE,
    MIN_BUDGET,
    Contents,
    check_shape,
    dtype_of,
    is_int,
    mask_name,
    need,
    pattern_width,
    split_key,
    unpack,
)
from .sparse import decode_pattern
from .streams import coder

MAP_MIN_BYTES = 1 << 16  # smaller files are read, not mapped
Decoded = tuple[dict[str, torch.Tensor], set[str], dict[str, tuple[int, bool]]]


def map_file(path: str | os.PathLike) -> memoryview:
    """A read-only view of the file's bytes, memory-mapped (pages are read as the decoder
    touches them, never copied whole into the heap); the map is released when the last
    view of it goes (a small or empty file is simply read)."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"no such file: {p}")
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < MAP_MIN_BYTES:
                return memoryview(fh.read())
            return memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
    except OSError as exc:
        raise FormatError(f"cannot read {p}: {exc.strerror or exc}") from None


def read_contents(path: str | os.PathLike) -> Contents:
    """Parse and validate the container and the manifest's top level (v2, or legacy v1).
    The file is memory-mapped: the streams are views into it, decoded one at a time."""
    return unpack(map_file(path), str(Path(path)))


def read_bytes(data: bytes) -> Contents:
    """As :func:`read_contents`, for the bytes of a file already in memory."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected the bytes of a .mzip, got {type(data).__name__}")
    return unpack(bytes(data))


def read(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """(manifest, streams) of a .mzip file, with the manifest's top level validated."""
    c = read_contents(path)
    return c.manifest, c.streams


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The validated manifest of a .mzip file (no tensor is decoded)."""
    return read_contents(path).manifest


class StreamReader:
    """Hands out each stream's decoded symbols once, checking width and count."""

    def __init__(self, streams: list[tuple[list[Any], bytes]]):
        self.streams, self.used = streams, set()
        self._lock = threading.Lock()  # entries may be decoded by several threads

    def symbols(self, ref: Any, bits: int | None = None, count: int | None = None
                ) -> np.ndarray:
        need(is_int(ref) and 0 <= ref < len(self.streams), f"bad stream reference {ref!r}")
        with self._lock:
            need(ref not in self.used, f"stream {ref} referenced twice")
            self.used.add(ref)
        (name, sbits, scount, _, _), data = self.streams[ref]
        need(bits is None or sbits == bits, f"stream {ref} has width {sbits}, expected {bits}")
        need(count is None or scount == count,
             f"stream {ref} holds {scount} symbols, expected {count}")
        out = coder(name).decode(data, scount, sbits)
        need(isinstance(out, np.ndarray) and out.size == scount,
             f"stream {ref} decoded to a wrong length")
        return out

    def bytes(self, ref: Any, count: int | None = None) -> bytes:
        return self.symbols(ref, 8, count).astype(np.uint8, copy=False).tobytes()


def _decode_values(v: Any, n: int, dtype: torch.dtype, rd: StreamReader
                   ) -> tuple[torch.Tensor, tuple[int, bool] | None]:
    need(isinstance(v, dict), "bad value encoding")
    if v.get("codec") == "dense":
        store = dtype_of(v.get("store", DTYPE_NAMES.get(dtype)))
        need(store is not None and store.is_floating_point, "bad dense storage dtype")
        raw = rd.symbols(v.get("data"), 8, n * store.itemsize)
        t = torch.from_numpy(raw.astype(np.uint8)).view(store) if n else \
            torch.empty(0, dtype=store)  # astype: one copy, aligned, writable
        return t.to(dtype), None
    if v.get("codec") == "int":
        bits, signed = v.get("bits"), v.get("signed", False)
        need(is_int(bits) and 1 <= bits <= 32 and isinstance(signed, bool),
             "bad integer code width")
        # the narrowest signed type that holds the codes: no full-size int64 intermediate
        kind = np.int8 if bits < 8 else np.int16 if bits < 16 else np.int32 if bits < 32 \
            else np.int64
        codes = rd.symbols(v.get("data"), bits, n)
        # symbols under 8 bits are uint8 below 128: read as int8 in place, no copy
        codes = codes.view(kind) if kind == np.int8 and codes.dtype == np.uint8 \
            else codes.astype(kind, copy=False)
        if signed:
            codes = codes - kind(1 << (bits - 1))
        return legacy_v1.codes_tensor(codes, dtype), (bits, signed)
    raise FormatError(f"unknown value codec {v.get('codec')!r}")


def _decode_pattern(e: dict[str, Any], n: int, dtype: torch.dtype, rd: StreamReader
                    ) -> torch.Tensor:
    meta = e.get("pattern")
    need(dtype == torch.bool and isinstance(meta, dict), "bad pattern")
    width = pattern_width(meta)
    if width is not None:
        need(is_int(width) and 1 <= width <= 16, "bad relative-index width")
        data: Any = rd.symbols(e.get("data"), width, meta.get("symbols"))
    else:
        data = rd.bytes(e.get("data"))
    return torch.from_numpy(decode_pattern(meta, data, n))


def _decode_entry(e: dict[str, Any], shape: tuple[int, ...], n: int, dtype: torch.dtype,
                  out: dict[str, torch.Tensor], rd: StreamReader
                  ) -> tuple[torch.Tensor, tuple[int, bool] | None]:
    """One tensor entry (masked entries use the mask decoded before them)."""
    codec = e.get("codec")
    if codec == "pattern":
        return _decode_pattern(e, n, dtype, rd), None
    if codec == "masked":
        fqn, name = split_key(e["key"])
        mask = out.get(f"{fqn}.{mask_name(name)}" if fqn else mask_name(name))
        need(mask is not None and mask.dtype == torch.bool and mask.numel() == n,
             f"mask of {e['key']!r} missing or wrong")
        mask = mask.reshape(shape)
        vals, width = _decode_values(e.get("values"), int(torch.count_nonzero(mask)), dtype, rd)
        return torch.zeros(shape, dtype=dtype).masked_scatter_(mask, vals), width
    return _decode_values(e, n, dtype, rd)


def _checked_entries(entries: list[Any], streams: Any
                     ) -> list[tuple[dict[str, Any], tuple[int, ...], int, torch.dtype]]:
    """(entry, shape, elements, dtype) per tensor entry, every key, dtype and shape
    checked and the declared elements bounded by the streams' bytes, before decoding."""
    budget = max(MIN_BUDGET, sum(len(s[1]) for s in streams) * ELEMENTS_PER_BYTE)
    jobs, keys, total = [], set(), 0
    for e in entries:
        need(isinstance(e, dict) and isinstance(e.get("key"), str), "bad tensor entry")
        key = e["key"]
        need(key not in keys, f"tensor {key!r} appears twice")
        keys.add(key)
        dtype = dtype_of(e.get("dtype", "float32"))
        need(dtype is not None, f"bad dtype for {key!r}")
        shape, n = check_shape(e.get("shape"), key)
        total += n
        need(total <= budget, "the file declares more elements than it can hold")
        jobs.append((e, shape, n, dtype))
    return jobs


def _phase(e: dict[str, Any]) -> int:
    codec = e.get("codec")
    return {"pattern": 0, "masked": 2}.get(codec, 1) if isinstance(codec, str) else 1


def _map(fn: Any, jobs: list[Any]) -> list[Any]:
    """``fn`` over ``jobs`` in order, on as many threads as torch may use (stream decoding
    and the numpy/torch conversions release the GIL); one thread: a plain loop."""
    workers = min(torch.get_num_threads(), len(jobs))
    if workers <= 1:
        return [fn(j) for j in jobs]
    with ThreadPoolExecutor(workers, thread_name_prefix="mzip-decode") as pool:
        return list(pool.map(fn, jobs))


def decode_tensors(manifest: dict[str, Any], streams: Any) -> Decoded:
    """All tensors of the file (key -> tensor), the Parameter keys, declared code widths."""
    if manifest.get("version") == 1:
        return legacy_v1.decode_tensors(manifest, streams, DTYPES, check_shape)
    rd = StreamReader(streams)
    out: dict[str, torch.Tensor] = {}
    params: set[str] = set()
    widths: dict[str, tuple[int, bool]] = {}
    jobs = _checked_entries(manifest["tensors"], streams)
    # masks first (patterns), masked values last: they read their decoded mask
    phases = [[j for j in jobs if _phase(j[0]) == p] for p in range(3)]

    def one(job: tuple[dict[str, Any], tuple[int, ...], int, torch.dtype]) -> Any:
        e, shape, n, dtype = job
        return _decode_entry(e, shape, n, dtype, out, rd)

    for group in phases:
        for (e, shape, _, _), (t, width) in zip(group, _map(one, group)):
            out[e["key"]] = t.reshape(shape)
            if width is not None:
                widths[e["key"]] = width
            if e.get("param", False) is True:
                params.add(e["key"])
    need(len(rd.used) == len(streams), "file holds streams that no tensor uses")
    return out, params, widths
