"""Writing a model as .mzip bytes: every tensor becomes one or two packed streams, each
stored with the smallest allowed coder, described by a JSON manifest (docs/format.md)."""

from __future__ import annotations

import os
import zlib
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import state
from ..errors import ModelzipError
from ..ops.pack import bits_needed, to_unsigned, unpack
from . import safetensors_io as stio
from .arch import record_of
from .manifest import (
    DTYPE_NAMES,
    FORMAT,
    SHAPE_ATTRS,
    VERSION,
    mask_name,
    pack,
    pattern_width,
    split_key,
)
from .sparse import encode_pattern
from .streams import coder, coders, pack_symbols


class StreamWriter:
    """Collects streams, choosing the smallest allowed coder for each."""

    def __init__(self, entropy: tuple[str, ...]):
        self.streams: list[bytes] = []
        self.table: list[list[Any]] = []
        self.entropy = entropy

    def add(self, symbols: np.ndarray, bits: int) -> int:
        """Store ``symbols`` (unsigned, ``bits`` wide); returns the stream index."""
        symbols = np.asarray(symbols).ravel()
        best_name, best = "raw", pack_symbols(symbols, bits)
        for name in self.entropy:
            data = coder(name).encode(symbols, bits) if symbols.size else None
            if data is not None and len(data) < len(best):
                best_name, best = name, data
        self.streams.append(best)
        self.table.append([best_name, bits, int(symbols.size), len(best), zlib.crc32(best)])
        return len(self.streams) - 1


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
        out: dict[str, Any] = {"codec": "dense", "data": w.add(raw, 8)}
        if store.dtype != t.dtype:
            out["store"] = DTYPE_NAMES[store.dtype]
        return out
    bits, signed = _int_info(module, name, t)
    try:
        sym = to_unsigned(t.to(torch.int64).numpy(), bits, signed)
    except ValueError as exc:
        raise ModelzipError(f"{name}: {exc}") from None
    out = {"codec": "int", "bits": bits, "data": w.add(sym, bits)}
    if signed:
        out["signed"] = True
    return out


def _encode_tensor(w: StreamWriter, model: nn.Module, key: str, t: torch.Tensor,
                   is_param: bool, half: bool) -> dict[str, Any]:
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
    modules, reparam, extra, attrs = {}, {}, {}, {}
    for fqn, m in model.named_modules():
        if state.is_registered_module(m):
            modules[fqn] = {"class": type(m).__name__, "spec": m.mz_spec()}
        if getattr(m, "_mz_reparam", None):
            reparam[fqn] = {k: dict(v) for k, v in m._mz_reparam.items()}
        if type(m).get_extra_state is not nn.Module.get_extra_state:
            value = m.get_extra_state()
            extra[fqn] = value.tolist() if isinstance(value, torch.Tensor) else value
        names = SHAPE_ATTRS.get(type(m))
        if names:
            attrs[fqn] = {a: _plain_attr(getattr(m, a)) for a in names}
    records = {"modules": modules, "reparam": reparam, "extra": extra, "attrs": attrs}
    return {k: v for k, v in records.items() if v}


def _plain_attr(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _entropy_names(entropy: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if entropy == "auto":
        return tuple(c for c in coders() if c != "raw")
    if entropy in ("none", None):
        return ()
    names = (entropy,) if isinstance(entropy, str) else tuple(entropy)
    for n in names:
        coder(n)
    return names


def dumps(model: nn.Module, *, entropy: str | tuple[str, ...] = "auto", half: bool = False,
          info: dict[str, Any] | None = None) -> bytes:
    """The .mzip bytes of ``model`` (exactly what :func:`save` writes), in memory.

    ``entropy``: stream coders to try on every stream ("auto" = all registered, "none" =
    raw only, or names such as "huffman"); the smallest result is kept per stream.
    ``half`` stores dense fp32 as fp16. ``info``: free-form JSON kept in the manifest.
    """
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"save() needs an nn.Module, got {type(model).__name__}")
    writer = StreamWriter(_entropy_names(entropy))
    params = {k for k, _ in model.named_parameters()}
    tensors = []
    for key, t in model.state_dict(keep_vars=False).items():
        if key.endswith("_extra_state"):
            continue
        if not isinstance(t, torch.Tensor) or t.dtype not in DTYPE_NAMES:
            raise ModelzipError(f"cannot store {key} of type {getattr(t, 'dtype', type(t))}")
        tensors.append(_encode_tensor(writer, model, key, t, key in params, half))
    manifest = {"format": FORMAT, "version": VERSION, "arch": record_of(model),
                "streams": writer.table, "tensors": tensors, **_module_records(model)}
    if info:
        manifest["info"] = info
    return pack(manifest, writer.streams)


def save(model: nn.Module, path: str | os.PathLike, *, entropy: str | tuple[str, ...] = "auto",
         half: bool = False, info: dict[str, Any] | None = None) -> int:
    """Write ``model`` to ``path`` as a .mzip (atomically); returns the file's size in bytes.

    Options as for :func:`dumps`.
    """
    data = dumps(model, entropy=entropy, half=half, info=info)
    stio.write_atomic(path, data)
    return len(data)
