"""The .mzip container: a safetensors file of uint8 streams plus a JSON manifest.

See docs/format.md for the full specification. Loading never runs code from the file:
module classes, re-parametrisations, architectures and stream coders are looked up in
allowlists, and every length, offset, shape and checksum is checked before use.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import state
from ..errors import FormatError, ModelzipError
from ..ops.pack import pack, packed_nbytes, unpack
from . import safetensors_io as stio
from .sparse import decode_pattern, encode_pattern
from .streams import coder, coders

FORMAT, VERSION = "modelzip", 1
MAX_NUMEL = 1 << 34
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
    "int32": torch.int32, "int64": torch.int64, "bool": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
# module attributes recorded so that layers resized by structured pruning rebuild exactly
SHAPE_ATTRS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv1d: ("in_channels", "out_channels", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm1d: ("num_features",), nn.BatchNorm2d: ("num_features",),
    nn.LayerNorm: ("normalized_shape",), nn.GroupNorm: ("num_groups", "num_channels"),
    nn.Embedding: ("num_embeddings", "embedding_dim"),
}


# =============================================================================== save
class _Writer:
    """Collects streams, choosing the smallest allowed coder for each."""

    def __init__(self, entropy: tuple[str, ...]):
        self.streams: dict[str, bytes] = {}
        self.entropy = entropy

    def add(self, raw: bytes, kind: str) -> dict[str, Any]:
        best_name, best_data, best_meta = "raw", raw, {}
        for name in self.entropy:
            data, meta = coder(name).encode(raw)
            if len(data) + 16 < len(best_data):
                best_name, best_data, best_meta = name, data, meta
        sid = f"s{len(self.streams)}"
        self.streams[sid] = best_data
        return {"id": sid, "kind": kind, "coder": best_name, "raw_len": len(raw),
                "len": len(best_data), "crc32": zlib.crc32(best_data), **best_meta}


def _split_key(key: str) -> tuple[str, str]:
    fqn, _, name = key.rpartition(".")
    return fqn, name


def _int_info(module: nn.Module, name: str, t: torch.Tensor) -> tuple[int, bool]:
    declared = getattr(module, "_mz_bits", {}).get(name)
    if declared:
        return declared
    if t.dtype == torch.bool:
        return 1, False
    info = torch.iinfo(t.dtype)
    return info.bits, info.min < 0


def _encode_values(w: _Writer, module: nn.Module, name: str, t: torch.Tensor,
                   half: bool) -> dict[str, Any]:
    """Entry fields for a flat run of values (dense floats or packed integers)."""
    if t.dtype.is_floating_point:
        store = t.half() if half and t.dtype == torch.float32 else t
        raw = store.contiguous().view(torch.uint8).numpy().tobytes() if store.numel() else b""
        return {"codec": "dense", "store": _NAMES[store.dtype], "data": w.add(raw, "values")}
    bits, signed = _int_info(module, name, t)
    raw = pack(t.to(torch.int64).numpy(), bits, signed)
    return {"codec": "int", "bits": bits, "signed": signed, "data": w.add(raw, "codes")}


def _encode_tensor(w: _Writer, model: nn.Module, key: str, t: torch.Tensor, is_param: bool,
                   half: bool) -> dict[str, Any]:
    fqn, name = _split_key(key)
    module = model.get_submodule(fqn)
    t = t.detach().cpu()
    entry: dict[str, Any] = {"key": key, "dtype": _NAMES[t.dtype], "shape": list(t.shape),
                             "param": is_param}
    if name.endswith("_mask") and t.dtype == torch.bool:
        meta, raw = encode_pattern(t.numpy())
        entry.update(codec="pattern", pattern=meta, data=w.add(raw, "index"))
        return entry
    base = name[: -len("_codes")] if name.endswith("_codes") else name
    mask = module._buffers.get(f"{base}_mask")
    if mask is not None and mask.shape == t.shape:
        entry["mask"] = f"{fqn}.{base}_mask" if fqn else f"{base}_mask"
        entry["values"] = _encode_values(w, module, name, t[mask], half)
        entry["codec"] = "masked"
        return entry
    entry.update(_encode_values(w, module, name, t.reshape(-1), half))
    return entry


def _module_records(model: nn.Module) -> dict[str, Any]:
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
    return {"modules": modules, "reparam": reparam, "extra": extra, "attrs": attrs}


def _plain_attr(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def save(model: nn.Module, path: str | os.PathLike, *, entropy: str | tuple[str, ...] = "auto",
         half: bool = False, info: dict[str, Any] | None = None) -> int:
    """Write ``model`` to ``path`` as a .mzip; returns the file's size in bytes.

    ``entropy``: stream coders to try on every stream ("auto" = all registered, "none" =
    raw only); the smallest result is kept per stream. ``half`` stores dense fp32 as fp16.
    """
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"save() needs an nn.Module, got {type(model).__name__}")
    if entropy == "auto":
        names = tuple(c for c in coders() if c != "raw")
    elif entropy in ("none", None):
        names = ()
    else:
        names = (entropy,) if isinstance(entropy, str) else tuple(entropy)
        for n in names:
            coder(n)
    writer = _Writer(names)
    params = {k for k, _ in model.named_parameters()}
    tensors = []
    for key, t in model.state_dict(keep_vars=False).items():
        if key.endswith("_extra_state"):
            continue
        if not isinstance(t, torch.Tensor) or t.dtype not in _NAMES:
            raise ModelzipError(f"cannot store {key} of type {getattr(t, 'dtype', type(t))}")
        tensors.append(_encode_tensor(writer, model, key, t, key in params, half))
    manifest = {"format": FORMAT, "version": VERSION, "arch": getattr(model, "_mz_arch", None),
                "tensors": tensors, "info": info or {}, **_module_records(model)}
    try:
        text = json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelzipError(f"model metadata is not JSON-serialisable: {exc}") from None
    data = stio.dumps(writer.streams, {"modelzip": text})
    stio.write_atomic(path, data)
    return len(data)


# =============================================================================== load
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise FormatError(msg)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest, streams) of a .mzip file, with the manifest's top level validated."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"no such file: {p}")
    streams, meta = stio.loads(p.read_bytes())
    _need("modelzip" in meta, f"{p} is not a modelzip file (no manifest)")
    try:
        manifest = json.loads(meta["modelzip"])
    except (json.JSONDecodeError, RecursionError):
        raise FormatError("manifest is not valid JSON") from None
    _need(isinstance(manifest, dict), "manifest is not an object")
    _need(manifest.get("format") == FORMAT, "not a modelzip manifest")
    _need(manifest.get("version") == VERSION,
          f"unsupported format version {manifest.get('version')!r} (this reader: {VERSION})")
    for k in ("modules", "reparam", "extra", "attrs"):
        _need(isinstance(manifest.get(k, {}), dict), f"manifest '{k}' must be an object")
    _need(isinstance(manifest.get("tensors"), list), "manifest 'tensors' must be a list")
    return manifest, streams


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return read(path)[0]


def _stream(streams: dict[str, bytes], ref: Any, used: set[str]) -> bytes:
    _need(isinstance(ref, dict), "stream reference must be an object")
    sid, clen, rlen = ref.get("id"), ref.get("len"), ref.get("raw_len")
    _need(isinstance(sid, str) and sid in streams, f"missing stream {sid!r}")
    _need(sid not in used, f"stream {sid} referenced twice")
    used.add(sid)
    data = streams[sid]
    _need(isinstance(clen, int) and clen == len(data), f"stream {sid} length mismatch")
    _need(ref.get("crc32") == zlib.crc32(data), f"stream {sid} checksum mismatch")
    _need(isinstance(rlen, int) and 0 <= rlen <= MAX_NUMEL, f"stream {sid} bad raw length")
    out = coder(str(ref.get("coder"))).decode(data, rlen, ref)
    _need(len(out) == rlen, f"stream {sid} decoded to a wrong length")
    return out


def _shape(entry: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    shape = entry.get("shape")
    _need(isinstance(shape, list) and len(shape) <= 8 and all(
        isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_NUMEL for s in shape),
        f"bad shape for {entry.get('key')!r}")
    n = math.prod(shape)
    _need(n <= MAX_NUMEL, "tensor too large")
    return tuple(shape), n


def _decode_values(v: dict[str, Any], n: int, dtype: torch.dtype, streams: dict[str, bytes],
                   used: set[str]) -> torch.Tensor:
    _need(isinstance(v, dict), "bad value encoding")
    raw = _stream(streams, v.get("data"), used)
    if v.get("codec") == "dense":
        store = DTYPES.get(v.get("store"))
        _need(store is not None and store.is_floating_point, "bad dense storage dtype")
        _need(len(raw) == n * store.itemsize, "dense stream has the wrong size")
        t = torch.frombuffer(bytearray(raw), dtype=store) if n else torch.empty(0, dtype=store)
        return t.to(dtype)
    if v.get("codec") == "int":
        bits, signed = v.get("bits"), v.get("signed")
        _need(isinstance(bits, int) and 1 <= bits <= 32 and isinstance(signed, bool),
              "bad integer code width")
        _need(len(raw) == packed_nbytes(n, bits), "integer stream has the wrong size")
        codes = unpack(raw, bits, n, signed)
        if dtype == torch.bool:
            _need(bool(np.all((codes == 0) | (codes == 1))), "bool tensor holds non-0/1")
        elif not dtype.is_floating_point:
            info = torch.iinfo(dtype)
            _need(codes.size == 0 or (codes.min() >= info.min and codes.max() <= info.max),
                  "codes outside their dtype")
        return torch.from_numpy(codes).to(dtype)
    raise FormatError(f"unknown value codec {v.get('codec')!r}")


def decode_tensors(manifest: dict[str, Any], streams: dict[str, bytes]
                   ) -> tuple[dict[str, torch.Tensor], set[str]]:
    """All tensors of the file (key -> tensor) and the keys that are Parameters."""
    entries = manifest["tensors"]
    out: dict[str, torch.Tensor] = {}
    params: set[str] = set()
    used: set[str] = set()
    order = sorted(entries, key=lambda e: 0 if isinstance(e, dict) and
                   e.get("codec") == "pattern" else 1)
    for e in order:
        _need(isinstance(e, dict) and isinstance(e.get("key"), str), "bad tensor entry")
        key = e["key"]
        _need(key not in out, f"tensor {key!r} appears twice")
        dtype = DTYPES.get(e.get("dtype"))
        _need(dtype is not None, f"bad dtype for {key!r}")
        shape, n = _shape(e)
        codec = e.get("codec")
        if codec == "pattern":
            _need(dtype == torch.bool and isinstance(e.get("pattern"), dict), "bad pattern")
            raw = _stream(streams, e.get("data"), used)
            t = torch.from_numpy(decode_pattern(e["pattern"], raw, n))
        elif codec == "masked":
            mask = out.get(e.get("mask"))
            _need(mask is not None and mask.numel() == n, f"mask of {key!r} missing or wrong")
            mask = mask.reshape(shape)
            vals = _decode_values(e.get("values"), int(mask.sum()), dtype, streams, used)
            t = torch.zeros(shape, dtype=dtype)
            t[mask] = vals
        else:
            t = _decode_values(e, n, dtype, streams, used)
        out[key] = t.reshape(shape)
        if e.get("param") is True:
            params.add(key)
    _need(used == set(streams), "file holds streams that no tensor uses")
    return out, params


def _submodule(model: nn.Module, fqn: str) -> nn.Module:
    _need(isinstance(fqn, str), "bad module path")
    try:
        return model.get_submodule(fqn)
    except AttributeError:
        raise FormatError(f"file refers to module {fqn!r}, which the model lacks") from None


def _apply_structure(model: nn.Module, manifest: dict[str, Any]) -> None:
    """Swap in compressed module classes, restore extra state and layer sizes."""
    for fqn, rec in manifest["modules"].items():
        _need(isinstance(rec, dict) and isinstance(rec.get("spec"), dict), "bad module record")
        cls = state.module_class(str(rec.get("class")))
        _submodule(model, fqn)
        new = cls.mz_from_spec(rec["spec"])
        if fqn:
            model.set_submodule(fqn, new)
        else:
            raise FormatError("the root module cannot be replaced")
    for fqn, value in manifest["extra"].items():
        _submodule(model, fqn).set_extra_state(value)
    for fqn, attrs in manifest["attrs"].items():
        m = _submodule(model, fqn)
        names = SHAPE_ATTRS.get(type(m))
        _need(isinstance(attrs, dict) and names is not None and set(attrs) == set(names),
              f"bad layer attributes for {fqn!r}")
        for a in names:
            v = attrs[a]
            ok = (isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_NUMEL) or (
                isinstance(v, list) and all(isinstance(x, int) and x > 0 for x in v))
            _need(ok, f"bad attribute {a} for {fqn!r}")
            setattr(m, a, tuple(v) if isinstance(v, list) else v)


def _place(model: nn.Module, tensors: dict[str, torch.Tensor], params: set[str],
           manifest: dict[str, Any]) -> None:
    """Create masks, re-parametrisations and resized tensors, then fill every value."""
    for key, t in tensors.items():
        fqn, name = _split_key(key)
        if name.endswith("_mask") and t.dtype == torch.bool:
            m = _submodule(model, fqn)
            m._buffers.pop(name, None)
            m.register_buffer(name, t)
    for fqn, names in manifest["reparam"].items():
        m = _submodule(model, fqn)
        _need(isinstance(names, dict), "bad re-parametrisation record")
        for name, meta in names.items():
            _need(isinstance(meta, dict) and meta.get("kind") in state.reparam_kinds(),
                  f"bad re-parametrisation for {fqn}.{name}")
            prefix = f"{fqn}.{name}_" if fqn else f"{name}_"
            parts = {k[len(prefix):]: v for k, v in tensors.items()
                     if k.startswith(prefix) and k[len(prefix):] != "mask"}
            _need(bool(parts), f"no tensors for re-parametrised {fqn}.{name}")
            trainable = tuple(s for s in parts if prefix + s in params)
            state.install_reparam(m, name, meta, parts, trainable)
    for e in manifest["tensors"]:
        bits = e.get("bits", e.get("values", {}).get("bits"))
        if e.get("codec") in ("int", "masked") and isinstance(bits, int):
            fqn, name = _split_key(e["key"])
            signed = e.get("signed", e.get("values", {}).get("signed"))
            state.set_bits(_submodule(model, fqn), name, bits, bool(signed))
    _resize(model, tensors, params)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    _need(not missing, f"file lacks tensors the model needs: {missing[:5]}")
    _need(not unexpected, f"file has tensors the model lacks: {unexpected[:5]}")
    state.refresh(model)


def _resize(model: nn.Module, tensors: dict[str, torch.Tensor], params: set[str]) -> None:
    """Replace plain tensors whose stored shape differs (layers shrunk by pruning)."""
    current = model.state_dict()
    for key, t in tensors.items():
        old = current.get(key)
        if old is None or old.shape == t.shape:
            continue
        fqn, name = _split_key(key)
        m = _submodule(model, fqn)
        if name in m._parameters:
            m._parameters[name] = nn.Parameter(torch.empty_like(t), requires_grad=True)
        elif name in m._buffers:
            m._buffers[name] = torch.empty_like(t)


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model stored in ``path``.

    ``model=None`` rebuilds the architecture recorded in the file (zoo and Hugging Face
    models); otherwise the given model (same architecture) is filled in place.
    """
    manifest, streams = read(path)
    tensors, params = decode_tensors(manifest, streams)
    if model is None:
        from ..zoo import from_arch

        model = from_arch(manifest.get("arch"))
    try:
        _apply_structure(model, manifest)
        _place(model, tensors, params, manifest)
    except ModelzipError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise FormatError(f"file does not fit the model: {exc}".splitlines()[0]) from None
    model._mz_arch = manifest.get("arch")
    return model.eval()
