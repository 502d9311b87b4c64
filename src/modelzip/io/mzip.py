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
from ..ops.pack import bits_needed, to_unsigned, unpack
from . import legacy_v1
from . import safetensors_io as stio
from .sparse import decode_pattern, encode_pattern
from .streams import coder, coders, pack_symbols

FORMAT, VERSION = "modelzip", 2
MAX_NUMEL = 1 << 34
MAX_MANIFEST = 64 << 20
# re-parametrisations computed only from their own tensors and mask: their value at
# install time is final, so loading neither copies their tensors again nor recomputes them
SELF_CONTAINED = ("codebook", "affine")
# a file may declare at most max(MIN_BUDGET, ELEMENTS_PER_BYTE * its size) elements, so
# that a few edited bytes cannot make the reader allocate terabytes
MIN_BUDGET, ELEMENTS_PER_BYTE = 1 << 27, 1 << 12
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


def _split_key(key: str) -> tuple[str, str]:
    fqn, _, name = key.rpartition(".")
    return fqn, name


def _int_info(module: nn.Module, name: str, t: torch.Tensor) -> tuple[int, bool]:
    declared = getattr(module, "_mz_bits", {}).get(name)
    if declared:
        return declared
    if t.dtype == torch.bool:
        return 1, False
    signed = torch.iinfo(t.dtype).min < 0
    return min(32, bits_needed(t.to(torch.int64).numpy(), signed)), signed


def _encode_values(w: _Writer, module: nn.Module, name: str, t: torch.Tensor,
                   half: bool) -> dict[str, Any]:
    """Entry fields for a flat run of values (dense floats or packed integers)."""
    if t.dtype.is_floating_point:
        store = t.half() if half and t.dtype == torch.float32 else t
        raw = store.contiguous().view(torch.uint8).numpy() if store.numel() else \
            np.zeros(0, np.uint8)
        out: dict[str, Any] = {"codec": "dense", "data": w.add(raw, 8)}
        if store.dtype != t.dtype:
            out["store"] = _NAMES[store.dtype]
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


def _encode_tensor(w: _Writer, model: nn.Module, key: str, t: torch.Tensor, is_param: bool,
                   half: bool) -> dict[str, Any]:
    fqn, name = _split_key(key)
    module = model.get_submodule(fqn)
    t = t.detach().cpu()
    entry: dict[str, Any] = {"key": key, "shape": list(t.shape)}
    if t.dtype != torch.float32:
        entry["dtype"] = _NAMES[t.dtype]
    if is_param:
        entry["param"] = True
    if name.endswith("_mask") and t.dtype == torch.bool:
        meta, raw = encode_pattern(t.numpy())
        width = _pattern_width(meta)
        syms = unpack(raw, width, meta["symbols"]) if width else np.frombuffer(raw, np.uint8)
        entry.update(codec="pattern", pattern=meta, data=w.add(syms, width or 8))
        return entry
    mask = module._buffers.get(_mask_name(name))
    if mask is not None and mask.shape == t.shape:
        entry["codec"] = "masked"
        entry["values"] = _encode_values(w, module, name, t[mask], half)
        return entry
    entry.update(_encode_values(w, module, name, t.reshape(-1), half))
    return entry


def _mask_name(name: str) -> str:
    """The mask buffer that governs tensor ``name`` (``weight_codes`` -> ``weight_mask``)."""
    base = name[: -len("_codes")] if name.endswith("_codes") else name
    return f"{base}_mask"


def _pattern_width(meta: dict[str, Any]) -> int | None:
    """Symbol width of a relative-index pattern stream (None: the stream is bytes)."""
    if meta.get("layout") == "relidx":
        return meta.get("bits")
    return None


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


def save(model: nn.Module, path: str | os.PathLike, *, entropy: str | tuple[str, ...] = "auto",
         half: bool = False, info: dict[str, Any] | None = None) -> int:
    """Write ``model`` to ``path`` as a .mzip; returns the file's size in bytes.

    ``entropy``: stream coders to try on every stream ("auto" = all registered, "none" =
    raw only, or names such as "huffman"); the smallest result is kept per stream.
    ``half`` stores dense fp32 as fp16.
    """
    if not isinstance(model, nn.Module):
        raise ModelzipError(f"save() needs an nn.Module, got {type(model).__name__}")
    writer = _Writer(_entropy_names(entropy))
    params = {k for k, _ in model.named_parameters()}
    tensors = []
    for key, t in model.state_dict(keep_vars=False).items():
        if key.endswith("_extra_state"):
            continue
        if not isinstance(t, torch.Tensor) or t.dtype not in _NAMES:
            raise ModelzipError(f"cannot store {key} of type {getattr(t, 'dtype', type(t))}")
        tensors.append(_encode_tensor(writer, model, key, t, key in params, half))
    manifest = {"format": FORMAT, "version": VERSION, "arch": getattr(model, "_mz_arch", None),
                "streams": writer.table, "tensors": tensors, **_module_records(model)}
    if info:
        manifest["info"] = info
    try:
        text = json.dumps(manifest, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ModelzipError(f"model metadata is not JSON-serialisable: {exc}") from None
    packed = zlib.compress(text.encode(), 9)
    meta = {"format": FORMAT, "version": str(VERSION), "manifest_crc32": str(zlib.crc32(packed))}
    data = stio.dumps({"manifest": packed, "data": b"".join(writer.streams)}, meta)
    stio.write_atomic(path, data)
    return len(data)


# =============================================================================== load
def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise FormatError(msg)


def _inflate(packed: bytes) -> str:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(packed, MAX_MANIFEST + 1)
    except zlib.error:
        raise FormatError("manifest stream is corrupt") from None
    _need(d.eof and not d.unused_data and len(raw) <= MAX_MANIFEST,
          "manifest stream is truncated, too long or has trailing bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("manifest is not UTF-8") from None


class Contents:
    """A parsed file: the manifest, the stream bytes and the file's size."""

    def __init__(self, manifest: dict[str, Any], streams: Any, size: int):
        self.manifest, self.streams, self.size = manifest, streams, size


def read_contents(path: str | os.PathLike) -> Contents:
    """Parse and validate the container and the manifest's top level (v2, or legacy v1)."""
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"no such file: {p}")
    blob = p.read_bytes()
    arrays, meta = stio.loads(blob)
    if "modelzip" in meta:  # version 1
        manifest = legacy_v1.parse_manifest(meta["modelzip"])
        streams: Any = arrays
    else:
        _need(meta.get("format") == FORMAT, f"{p} is not a modelzip file")
        _need(meta.get("version") == str(VERSION),
              f"unsupported format version {meta.get('version')!r} (this reader: {VERSION})")
        _need(set(arrays) == {"manifest", "data"}, "file must hold exactly manifest and data")
        _need(meta.get("manifest_crc32") == str(zlib.crc32(arrays["manifest"])),
              "manifest checksum mismatch")
        manifest = _parse_json(_inflate(arrays["manifest"]))
        _need(manifest.get("version") == VERSION, "manifest version mismatch")
        streams = _split_streams(manifest.get("streams"), arrays["data"], len(blob))
    _need(manifest.get("format") == FORMAT, "not a modelzip manifest")
    for k in ("modules", "reparam", "extra", "attrs"):
        _need(isinstance(manifest.setdefault(k, {}), dict), f"manifest '{k}' must be an object")
    _need(isinstance(manifest.get("tensors"), list), "manifest 'tensors' must be a list")
    return Contents(manifest, streams, len(blob))


def _parse_json(text: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise FormatError("manifest is not valid JSON") from None
    _need(isinstance(manifest, dict), "manifest is not an object")
    return manifest


def _split_streams(table: Any, data: bytes, file_bytes: int) -> list[tuple[list[Any], bytes]]:
    """(row, bytes) per stream; rows are [coder, bits, count, length, crc32]."""
    _need(isinstance(table, list), "manifest 'streams' must be a list")
    budget = max(MIN_BUDGET, ELEMENTS_PER_BYTE * file_bytes)
    out, pos = [], 0
    for i, row in enumerate(table):
        _need(isinstance(row, list) and len(row) == 5 and isinstance(row[0], str)
              and all(_is_int(v) for v in row[1:]), f"bad stream record {i}")
        _, bits, count, length, crc = row
        _need(1 <= bits <= 32 and 0 <= count <= budget and 0 <= length <= len(data) - pos,
              f"stream {i} has out-of-range width, count or length")
        chunk = data[pos: pos + length]
        _need(zlib.crc32(chunk) == crc, f"stream {i} checksum mismatch")
        out.append((row, chunk))
        pos += length
    _need(pos == len(data), "data holds bytes that no stream uses")
    return out


def _dtype(name: Any) -> torch.dtype | None:
    return DTYPES.get(name) if isinstance(name, str) else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], Any]:
    """(manifest, streams) of a .mzip file, with the manifest's top level validated."""
    c = read_contents(path)
    return c.manifest, c.streams


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    return read_contents(path).manifest


class _Reader:
    """Hands out each stream's decoded symbols once, checking width and count."""

    def __init__(self, streams: list[tuple[list[Any], bytes]]):
        self.streams, self.used = streams, set()

    def symbols(self, ref: Any, bits: int | None = None, count: int | None = None
                ) -> np.ndarray:
        _need(_is_int(ref) and 0 <= ref < len(self.streams), f"bad stream reference {ref!r}")
        _need(ref not in self.used, f"stream {ref} referenced twice")
        self.used.add(ref)
        (name, sbits, scount, _, _), data = self.streams[ref]
        _need(bits is None or sbits == bits, f"stream {ref} has width {sbits}, expected {bits}")
        _need(count is None or scount == count,
              f"stream {ref} holds {scount} symbols, expected {count}")
        out = coder(name).decode(data, scount, sbits)
        _need(isinstance(out, np.ndarray) and out.size == scount,
              f"stream {ref} decoded to a wrong length")
        return out

    def bytes(self, ref: Any, count: int | None = None) -> bytes:
        return self.symbols(ref, 8, count).astype(np.uint8, copy=False).tobytes()


def _shape(shape: Any, key: Any) -> tuple[tuple[int, ...], int]:
    _need(isinstance(shape, list) and len(shape) <= 8 and all(
        _is_int(s) and 0 <= s <= MAX_NUMEL for s in shape), f"bad shape for {key!r}")
    n = math.prod(shape)
    _need(n <= MAX_NUMEL, "tensor too large")
    return tuple(shape), n


def _decode_values(v: Any, n: int, dtype: torch.dtype, rd: _Reader
                   ) -> tuple[torch.Tensor, tuple[int, bool] | None]:
    _need(isinstance(v, dict), "bad value encoding")
    if v.get("codec") == "dense":
        store = _dtype(v.get("store", _NAMES.get(dtype)))
        _need(store is not None and store.is_floating_point, "bad dense storage dtype")
        raw = rd.bytes(v.get("data"), n * store.itemsize)
        t = torch.frombuffer(bytearray(raw), dtype=store) if n else torch.empty(0, dtype=store)
        return t.to(dtype), None
    if v.get("codec") == "int":
        bits, signed = v.get("bits"), v.get("signed", False)
        _need(_is_int(bits) and 1 <= bits <= 32 and isinstance(signed, bool),
              "bad integer code width")
        codes = rd.symbols(v.get("data"), bits, n).astype(np.int64, copy=False)
        if signed:
            codes = codes - (1 << (bits - 1))
        return legacy_v1.codes_tensor(codes, dtype), (bits, signed)
    raise FormatError(f"unknown value codec {v.get('codec')!r}")


def _decode_pattern(e: dict[str, Any], n: int, dtype: torch.dtype, rd: _Reader
                    ) -> torch.Tensor:
    meta = e.get("pattern")
    _need(dtype == torch.bool and isinstance(meta, dict), "bad pattern")
    width = _pattern_width(meta)
    if width is not None:
        _need(_is_int(width) and 1 <= width <= 16, "bad relative-index width")
        data: Any = rd.symbols(e.get("data"), width, meta.get("symbols"))
    else:
        data = rd.bytes(e.get("data"))
    return torch.from_numpy(decode_pattern(meta, data, n))


def decode_tensors(manifest: dict[str, Any], streams: Any
                   ) -> tuple[dict[str, torch.Tensor], set[str], dict[str, tuple[int, bool]]]:
    """All tensors of the file (key -> tensor), the Parameter keys, declared code widths."""
    if manifest.get("version") == 1:
        return legacy_v1.decode_tensors(manifest, streams, DTYPES, _shape)
    rd = _Reader(streams)
    out: dict[str, torch.Tensor] = {}
    params: set[str] = set()
    widths: dict[str, tuple[int, bool]] = {}
    total = 0
    entries = manifest["tensors"]
    order = sorted(entries, key=lambda e: 0 if isinstance(e, dict) and
                   e.get("codec") == "pattern" else 1)
    for e in order:
        _need(isinstance(e, dict) and isinstance(e.get("key"), str), "bad tensor entry")
        key = e["key"]
        _need(key not in out, f"tensor {key!r} appears twice")
        dtype = _dtype(e.get("dtype", "float32"))
        _need(dtype is not None, f"bad dtype for {key!r}")
        shape, n = _shape(e.get("shape"), key)
        total += n
        _need(total <= max(MIN_BUDGET, sum(len(s[1]) for s in streams) * ELEMENTS_PER_BYTE),
              "the file declares more elements than it can hold")
        codec, width = e.get("codec"), None
        if codec == "pattern":
            t = _decode_pattern(e, n, dtype, rd)
        elif codec == "masked":
            fqn, name = _split_key(key)
            mask = out.get(f"{fqn}.{_mask_name(name)}" if fqn else _mask_name(name))
            _need(mask is not None and mask.numel() == n, f"mask of {key!r} missing or wrong")
            mask = mask.reshape(shape)
            vals, width = _decode_values(e.get("values"), int(torch.count_nonzero(mask)),
                                         dtype, rd)
            t = torch.zeros(shape, dtype=dtype).masked_scatter_(mask, vals)
        else:
            t, width = _decode_values(e, n, dtype, rd)
        out[key] = t.reshape(shape)
        if width is not None:
            widths[key] = width
        if e.get("param", False) is True:
            params.add(key)
    _need(len(rd.used) == len(streams), "file holds streams that no tensor uses")
    return out, params, widths


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
           widths: dict[str, tuple[int, bool]], manifest: dict[str, Any]) -> None:
    """Create masks, re-parametrisations and resized tensors, then fill every value."""
    installed: set[str] = set()  # already placed with their final values
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
            if meta["kind"] in SELF_CONTAINED:
                installed.update(prefix + s for s in parts)
    for key, (bits, signed) in widths.items():
        fqn, name = _split_key(key)
        state.set_bits(_submodule(model, fqn), name, bits, signed)
    _resize(model, tensors, params)
    rest = {k: v for k, v in tensors.items() if k not in installed}
    missing, unexpected = model.load_state_dict(rest, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state") and k not in installed]
    _need(not missing, f"file lacks tensors the model needs: {missing[:5]}")
    _need(not unexpected, f"file has tensors the model lacks: {unexpected[:5]}")
    with torch.no_grad():  # kinds that may depend on state loaded after their install
        for _, m, name, meta in state.reparams(model):
            if meta.get("kind") not in SELF_CONTAINED:
                m.__dict__[name] = state.materialize(m, name)


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


def _build(arch: Any, stored: int) -> nn.Module:
    """The recorded architecture, refused when it would be far larger than the file."""
    from ..zoo import from_arch

    _need(arch is None or (isinstance(arch, dict) and isinstance(arch.get("kind"), str)),
          "bad architecture record")
    try:
        if isinstance(arch, dict) and arch.get("kind") == "zoo":
            with torch.device("meta"):
                probe = from_arch(arch)
            need = sum(t.numel() for t in probe.state_dict().values())
            # structured pruning legitimately stores far fewer values than the recorded
            # (unpruned) architecture (90% of channels removed keeps ~1% of a layer); the
            # bound only stops a tiny file from demanding an absurd allocation
            _need(need <= max(256 * stored, 1 << 24),
                  "the architecture does not match the tensors")
        return from_arch(arch)
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
        raise FormatError(f"cannot build the recorded architecture: {exc}") from None


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model stored in ``path``.

    ``model=None`` rebuilds the architecture recorded in the file (zoo and Hugging Face
    models); otherwise the given model (same architecture) is filled in place.
    """
    manifest, streams = read(path)
    tensors, params, widths = decode_tensors(manifest, streams)
    if model is None:
        model = _build(manifest.get("arch"), sum(t.numel() for t in tensors.values()))
    try:
        _apply_structure(model, manifest)
        _place(model, tensors, params, widths, manifest)
    except ModelzipError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise FormatError(f"file does not fit the model: {exc}".splitlines()[0]) from None
    model._mz_arch = manifest.get("arch")
    return model.eval()
