"""Writing a model as .mzip bytes: every tensor becomes one or two packed streams, each
stored with the smallest allowed coder (or the fast path for large models), described by a
JSON manifest (docs/format.md). ``save`` streams them into the temp file one at a time."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import state
from ..errors import ModelzipError
from ..ops.pack import bits_needed, unpack
from . import safetensors_io as stio
from .arch import record_of
from .manifest import (
    DTYPE_NAMES,
    FORMAT,
    SHAPE_ATTRS,
    VERSION,
    check_json_bounds,
    mask_name,
    pattern_width,
    seal,
    split_key,
)
from .sparse import encode_pattern
from .streams import coder, coders, encode_fast, pack_symbols


class StreamWriter:
    """Encodes streams one at a time and hands each one's bytes to ``sink`` as soon as it
    is made (a list in memory, or the file being written), keeping only the table.

    ``entropy``: coder names to try on every stream, keeping the smallest (the
    exhaustive search), or None for the fast path (:func:`streams.encode_fast`)."""

    def __init__(self, entropy: tuple[str, ...] | None, sink: Callable[[bytes], Any]):
        self.table: list[list[Any]] = []
        self.entropy, self.sink, self.length = entropy, sink, 0

    def add(self, symbols: np.ndarray, bits: int, kind: str = "int") -> int:
        """Store ``symbols`` (unsigned, ``bits`` wide); returns the stream index.
        ``kind``: "float" for the bytes of dense floats, "int" for any other symbols."""
        symbols = np.asarray(symbols).ravel()
        row, best = self.encode(symbols, bits, kind)
        self.sink(best)
        self.length += len(best)
        self.table.append(row)
        return len(self.table) - 1

    def encode(self, symbols: np.ndarray, bits: int, kind: str) -> tuple[list[Any], bytes]:
        """(the stream table row, the stored bytes) of flat ``symbols`` under the plan."""
        if self.entropy is None:
            best_name, best = encode_fast(symbols, bits, kind)
        else:
            best_name, best = "raw", pack_symbols(symbols, bits)
            for name in self.entropy:
                data = coder(name).encode(symbols, bits) if symbols.size else None
                if data is not None and len(data) < len(best):
                    best_name, best = name, data
        return [best_name, bits, int(symbols.size), len(best), zlib.crc32(best)], best


def unsigned_codes(codes: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Integer ``codes`` mapped into ``[0, 2**bits)`` (signed ones offset by 2**(bits-1)),
    range-checked, in the narrowest unsigned dtype: the same values as
    ``ops.pack.to_unsigned`` without its int64/uint64 copies of every code."""
    c = np.asarray(codes).ravel()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if c.size and (int(c.min()) < lo or int(c.max()) > hi):
        raise ValueError(f"codes outside the {bits}-bit {'signed' if signed else 'unsigned'} "
                         "range")
    out = np.uint8 if bits <= 8 else np.uint16 if bits <= 16 else np.uint32 if bits <= 32 \
        else np.uint64
    if c.dtype == np.bool_:
        return c.astype(out)
    if lo == 0:
        return c.astype(out, copy=False)
    work = np.int16 if bits <= 8 else np.int32 if bits <= 16 else np.int64
    return (c.astype(work) - work(lo)).astype(out)


def _int_info(module: nn.Module, name: str, t: torch.Tensor) -> tuple[int, bool]:
    declared = getattr(module, "_mz_bits", {}).get(name)
    if declared:
        return declared
    if t.dtype == torch.bool:
        return 1, False
    signed = torch.iinfo(t.dtype).min < 0
    return min(32, bits_needed(t.to(torch.int64).numpy(), signed)), signed


def _encode_values(w: StreamWriter, module: nn.Module, name: str, t: torch.Tensor,
                   half: bool) -> dict[str, Any]:
    """Entry fields for a flat run of values (dense floats or packed integers)."""
    if t.dtype.is_floating_point:
        store = t.half() if half and t.dtype == torch.float32 else t
        raw = store.contiguous().view(torch.uint8).numpy() if store.numel() else \
            np.zeros(0, np.uint8)
        out: dict[str, Any] = {"codec": "dense", "data": w.add(raw, 8, "float")}
        if store.dtype != t.dtype:
            out["store"] = DTYPE_NAMES[store.dtype]
        return out
    bits, signed = _int_info(module, name, t)
    try:
        sym = unsigned_codes(t.numpy(), bits, signed)
    except ValueError as exc:
        raise ModelzipError(f"{name}: {exc}") from None
    out = {"codec": "int", "bits": bits, "data": w.add(sym, bits)}
    if signed:
        out["signed"] = True
    return out


def encode_tensor(w: StreamWriter, model: nn.Module, key: str, t: torch.Tensor,
                  is_param: bool, half: bool) -> dict[str, Any]:
    """The manifest entry of state tensor ``key`` of ``model``, its stream(s) added to ``w``."""
    fqn, name = split_key(key)
    module = model.get_submodule(fqn)
    t = t.detach().cpu()
    entry: dict[str, Any] = {"key": key, "shape": list(t.shape)}
    if t.dtype != torch.float32:
        entry["dtype"] = DTYPE_NAMES[t.dtype]
    if is_param:
        entry["param"] = True
    if name.endswith("_mask") and t.dtype == torch.bool:
        meta, raw = encode_pattern(t.numpy())
        width = pattern_width(meta)
        syms = unpack(raw, width, meta["symbols"]) if width else np.frombuffer(raw, np.uint8)
        entry.update(codec="pattern", pattern=meta, data=w.add(syms, width or 8))
        return entry
    mask = module._buffers.get(mask_name(name))
    if mask is not None and mask.shape == t.shape:
        entry["codec"] = "masked"
        entry["values"] = _encode_values(w, module, name, t[mask], half)
        return entry
    entry.update(_encode_values(w, module, name, t.reshape(-1), half))
    return entry


def _module_records(model: nn.Module) -> dict[str, Any]:
    """The manifest's modules / reparam / extra / attrs sections (empty ones left out)."""
    records: dict[str, dict[str, Any]] = {k: {} for k in RECORD_SECTIONS}
    for fqn, m in model.named_modules():
        for section, value in module_record(m).items():
            records[section][fqn] = value
    return {k: v for k, v in records.items() if v}


RECORD_SECTIONS = ("modules", "reparam", "extra", "attrs")


def module_record(m: nn.Module) -> dict[str, Any]:
    """What the manifest's modules / reparam / extra / attrs sections say about ``m``
    itself (its children not included); sections with nothing to say left out."""
    out: dict[str, Any] = {}
    if state.is_registered_module(m):
        out["modules"] = {"class": type(m).__name__, "spec": m.mz_spec()}
    if getattr(m, "_mz_reparam", None):
        out["reparam"] = {k: dict(v) for k, v in m._mz_reparam.items()}
    if type(m).get_extra_state is not nn.Module.get_extra_state:
        value = m.get_extra_state()
        out["extra"] = value.tolist() if isinstance(value, torch.Tensor) else value
    names = SHAPE_ATTRS.get(type(m))
    if names:
        out["attrs"] = {a: _plain_attr(getattr(m, a)) for a in names}
    return out


def _plain_attr(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


AUTO_EXHAUSTIVE_BYTES = 16 << 20  # "auto": the exhaustive search up to this many bytes
MODES = ("auto", "best", "fast", "none")


def tensor_bytes(tensors: dict[str, Any]) -> int:
    """Bytes the tensors take in memory: an upper bound of the raw streams they make
    (integer codes pack narrower, masks into patterns), known before encoding anything."""
    return sum(t.numel() * t.element_size() for t in tensors.values()
               if isinstance(t, torch.Tensor))


def _state_items(model: nn.Module) -> Callable[[], Iterator[tuple[str, Any]]]:
    """What ``model.state_dict()`` holds, in its order, produced one module at a time:
    packed layers hand out their codes unpacked (a byte per weight), so building the whole
    state dict first would hold every layer's unpacked codes at once. Falls back to the
    whole dict when a module has state-dict hooks."""
    mods = list(model.named_modules(remove_duplicate=False))
    if has_state_hooks(model):
        sd = model.state_dict(keep_vars=False)
        return lambda: ((k, t) for k, t in sd.items() if not k.endswith("_extra_state"))

    def items() -> Iterator[tuple[str, Any]]:
        for name, m in mods:
            yield from module_states(name, m)

    return items


def _state_bytes(states: Callable[[], Iterator[tuple[str, Any]]], limit: int) -> int:
    """Bytes of the state's tensors, counted until they pass ``limit`` (all the coder
    choice needs to know: a large model's packed layers are not all unpacked for it)."""
    total = 0
    for _, t in states():
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
            if total > limit:
                break
    return total


def has_state_hooks(model: nn.Module) -> bool:
    """Whether some module changes its state dict by hooks (then only the whole
    ``state_dict()`` says what is saved)."""
    return any(m._state_dict_hooks or m._state_dict_pre_hooks
               for m in model.modules())


def module_states(name: str, m: nn.Module) -> Iterator[tuple[str, Any]]:
    """(key, tensor) of what module ``name`` itself puts in the state dict, in order
    (packed layers hand out their codes unpacked, one layer at a time)."""
    dest: dict[str, Any] = {}
    m._save_to_state_dict(dest, f"{name}." if name else "", False)
    yield from ((k, t) for k, t in dest.items() if not k.endswith("_extra_state"))


def entropy_plan(entropy: str | tuple[str, ...] | None, nbytes: int) -> tuple[str, ...] | None:
    """The coders to try on every stream, or None for the fast path.

    "best": every registered coder (smallest kept; lzma preset 9e is slow on big float
    streams); "fast": the fast path; "auto" (default): "best" while the model's tensors
    take at most AUTO_EXHAUSTIVE_BYTES, "fast" above; "estimate" (sizing a compression
    run's attempts): Huffman only up to that size (a quick, close upper bound of "best"),
    "fast" above (exactly what "auto" writes); "none": raw packing only; or coder
    names ("huffman", ("huffman", "zstd"), ...) tried exhaustively."""
    if entropy in ("auto", "estimate"):
        small = nbytes <= AUTO_EXHAUSTIVE_BYTES
        entropy = ("best" if entropy == "auto" else "huffman") if small else "fast"
    if entropy == "best":
        return tuple(c for c in coders() if c != "raw")
    if entropy == "fast":
        return None
    if entropy in ("none", None):
        return ()
    names = (entropy,) if isinstance(entropy, str) else tuple(entropy)
    for n in names:
        coder(n)
    return names


def _encode_model(model: nn.Module, entropy: str | tuple[str, ...] | None, half: bool,
                  info: dict[str, Any] | None, sink: Callable[[bytes], Any]
                  ) -> tuple[int, bytes, dict[str, str]]:
    """Encode every tensor of ``model`` into ``sink``, one stream at a time; returns (bytes
    of streams written, the packed manifest, the safetensors metadata)."""
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"save() needs an nn.Module, got {type(model).__name__}")
    if info:
        check_json_bounds(info, "info")
    states = _state_items(model)
    size = _state_bytes(states, AUTO_EXHAUSTIVE_BYTES)
    writer = StreamWriter(entropy_plan(entropy, size), sink)
    params = {k for k, _ in model.named_parameters()}
    tensors = []
    for key, t in states():
        if not isinstance(t, torch.Tensor) or t.dtype not in DTYPE_NAMES:
            raise ModelzipError(f"cannot store {key} of type {getattr(t, 'dtype', type(t))}")
        tensors.append(encode_tensor(writer, model, key, t, key in params, half))
    manifest = {"format": FORMAT, "version": VERSION, "arch": record_of(model),
                "streams": writer.table, "tensors": tensors, **_module_records(model)}
    if info:
        manifest["info"] = info
    packed, meta = seal(manifest)
    return writer.length, packed, meta


def dumps(model: nn.Module, *, entropy: str | tuple[str, ...] = "auto", half: bool = False,
          info: dict[str, Any] | None = None) -> bytes:
    """The .mzip bytes of ``model`` (exactly what :func:`save` writes), in memory.

    ``entropy``: "auto" (default), "best", "fast", "none" or coder names, see
    :func:`entropy_plan`. ``half`` stores dense fp32 as fp16. ``info``: free-form JSON
    kept in the manifest.
    """
    parts: list[bytes] = []
    length, packed, meta = _encode_model(model, entropy, half, info, parts.append)
    head = stio.header({"data": length, "manifest": len(packed)}, meta)
    return b"".join([head, *parts, packed])


# room left for the header while the streams are written: the longest header possible
_RESERVE = len(stio.header({"data": 10 ** 17, "manifest": 10 ** 17},
                           {"format": FORMAT, "version": str(VERSION),
                            "manifest_crc32": str(2 ** 32 - 1)}))
_MOVE_CHUNK = 8 << 20


def _move_down(fd: int, src: int, dst: int, length: int) -> None:
    """Move ``length`` bytes of the open file from offset ``src`` to ``dst < src``, in
    chunks (front to back, so an overlap is safe), then cut the file after them."""
    done = 0
    while done < length:
        chunk = os.pread(fd, min(_MOVE_CHUNK, length - done), src + done)
        if not chunk:
            raise OSError("file shorter than what was written to it")
        pos = 0
        while pos < len(chunk):
            pos += os.pwrite(fd, memoryview(chunk)[pos:], dst + done + pos)
        done += len(chunk)
    os.ftruncate(fd, dst + length)


def save(model: nn.Module, path: str | os.PathLike, *, entropy: str | tuple[str, ...] = "auto",
         half: bool = False, info: dict[str, Any] | None = None) -> int:
    """Write ``model`` to ``path`` as a .mzip, atomically (temp file + rename), streaming:
    each stream goes to the temp file as soon as it is encoded, after room reserved for
    the header; the manifest follows, then the header is written and the data moved up
    to meet it. The bytes are exactly :func:`dumps`'s. Returns the file's size in bytes.
    """
    with stio.atomic_file(path) as fd:
        os.lseek(fd, _RESERVE, os.SEEK_SET)
        length, packed, meta = _encode_model(model, entropy, half, info,
                                             lambda b: stio.write_all(fd, b))
        stio.write_all(fd, packed)
        head = stio.header({"data": length, "manifest": len(packed)}, meta)
        _move_down(fd, _RESERVE, len(head), length + len(packed))
        os.lseek(fd, 0, os.SEEK_SET)
        stio.write_all(fd, head)
    return len(head) + length + len(packed)
