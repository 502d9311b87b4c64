"""The .mzip container and its manifest: constants, the checks every reader step uses, and
the two-tensor safetensors wrapping (see docs/format.md).

A file is a safetensors file with exactly two uint8 tensors, ``manifest`` (zlib-compressed
JSON) and ``data`` (every stream's bytes back to back), plus metadata naming the format,
its version and the manifest's CRC32. This module packs and unpacks that wrapping and
validates the manifest's top level; tensors are encoded in writer.py, decoded in
reader.py and put into a model in restore.py.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

import torch
from torch import nn

from ..errors import FormatError, ModelzipError
from . import legacy_v1
from . import safetensors_io as stio

FORMAT, VERSION = "modelzip", 2
MAX_NUMEL = 1 << 34
MAX_MANIFEST = 64 << 20
MAX_NODES, MAX_DEPTH = 1 << 21, 64  # what the writer accepts in a manifest
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
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# module attributes recorded so that layers resized by structured pruning rebuild exactly
SHAPE_ATTRS: dict[type, tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features"),
    nn.Conv1d: ("in_channels", "out_channels", "groups"),
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm1d: ("num_features",), nn.BatchNorm2d: ("num_features",),
    nn.LayerNorm: ("normalized_shape",), nn.GroupNorm: ("num_groups", "num_channels"),
    nn.Embedding: ("num_embeddings", "embedding_dim"),
}
SECTIONS = ("modules", "reparam", "extra", "attrs")


# ------------------------------------------------------------------------- checks
def need(cond: bool, msg: str) -> None:
    """Raise FormatError(msg) unless ``cond``: every reader check goes through here."""
    if not cond:
        raise FormatError(msg)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def dtype_of(name: Any) -> torch.dtype | None:
    """The torch dtype of an allowlisted dtype name (None for anything else)."""
    return DTYPES.get(name) if isinstance(name, str) else None


def check_shape(shape: Any, key: Any) -> tuple[tuple[int, ...], int]:
    """(shape, element count) of a stored shape, refused when malformed or huge."""
    need(isinstance(shape, list) and len(shape) <= 8 and all(
        is_int(s) and 0 <= s <= MAX_NUMEL for s in shape), f"bad shape for {key!r}")
    n = math.prod(shape)
    need(n <= MAX_NUMEL, "tensor too large")
    return tuple(shape), n


# --------------------------------------------------------------------- tensor keys
def split_key(key: str) -> tuple[str, str]:
    """(module fqn, tensor name) of a state_dict key."""
    fqn, _, name = key.rpartition(".")
    return fqn, name


def mask_name(name: str) -> str:
    """The mask buffer that governs tensor ``name`` (``weight_codes`` -> ``weight_mask``)."""
    base = name[: -len("_codes")] if name.endswith("_codes") else name
    return f"{base}_mask"


def pattern_width(meta: dict[str, Any]) -> int | None:
    """Symbol width of a relative-index pattern stream (None: the stream is bytes)."""
    if meta.get("layout") == "relidx":
        return meta.get("bits")
    return None


# ---------------------------------------------------------------------- container
class Contents:
    """A parsed file: the manifest, the stream bytes and the file's size."""

    def __init__(self, manifest: dict[str, Any], streams: Any, size: int):
        self.manifest, self.streams, self.size = manifest, streams, size


def check_json_bounds(obj: Any, what: str = "manifest") -> None:
    """Refuse a value the reader would refuse, before serialising it: more than MAX_NODES
    nodes (shared references, e.g. a YAML alias bomb, count every time they are reached,
    so the walk stops early instead of expanding them) or nesting deeper than MAX_DEPTH."""
    stack, nodes = [(obj, 0)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise ModelzipError(f"{what} is too large or too deeply nested to store "
                                f"(limits: {MAX_NODES:,} values, depth {MAX_DEPTH})")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            nodes += len(node)
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


SMALL_MANIFEST = 1 << 18  # bytes of JSON compressed at zlib level 9 (6 above)


def seal(manifest: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """(the ``manifest`` tensor's bytes, the safetensors metadata) of a version-2 file;
    refuses what the reader would refuse (node count, depth, huge integers, inflated
    size)."""
    check_json_bounds(manifest)
    try:
        text = json.dumps(manifest, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelzipError(f"model metadata is not JSON-serialisable: {exc}") from None
    if len(text.encode()) > MAX_MANIFEST:
        raise ModelzipError(f"model metadata is over {MAX_MANIFEST >> 20} MiB")
    raw = text.encode()
    # level 9 buys ~0.3% over 6 at twice the time: worth it only for small manifests (a
    # Hugging Face record with its tokenizer files is ~1 MB of JSON: 0.17 s at level 9)
    packed = zlib.compress(raw, 9 if len(raw) <= SMALL_MANIFEST else 6)
    meta = {"format": FORMAT, "version": str(VERSION), "manifest_crc32": str(zlib.crc32(packed))}
    return packed, meta


def pack(manifest: dict[str, Any], streams: list[bytes]) -> bytes:
    """The bytes of a version-2 file holding ``manifest`` and ``streams`` (see seal)."""
    packed, meta = seal(manifest)
    return stio.dumps({"manifest": packed, "data": b"".join(streams)}, meta)


def unpack(blob: bytes, name: str = "data") -> Contents:
    """Parse and validate the container and the manifest's top level (v2, or legacy v1)."""
    arrays, meta = stio.loads(blob)
    if "modelzip" in meta:  # version 1
        manifest = legacy_v1.parse_manifest(meta["modelzip"])
        streams: Any = arrays
    else:
        need(meta.get("format") == FORMAT, f"{name} is not a modelzip file")
        need(meta.get("version") == str(VERSION),
             f"unsupported format version {meta.get('version')!r} (this reader: {VERSION})")
        need(set(arrays) == {"manifest", "data"}, "file must hold exactly manifest and data")
        need(meta.get("manifest_crc32") == str(zlib.crc32(arrays["manifest"])),
             "manifest checksum mismatch")
        manifest = _parse_json(_inflate(arrays["manifest"]))
        need(manifest.get("version") == VERSION, "manifest version mismatch")
        streams = _split_streams(manifest.get("streams"), arrays["data"], len(blob))
    need(manifest.get("format") == FORMAT, "not a modelzip manifest")
    for k in SECTIONS:
        need(isinstance(manifest.setdefault(k, {}), dict), f"manifest '{k}' must be an object")
    need(isinstance(manifest.get("tensors"), list), "manifest 'tensors' must be a list")
    return Contents(manifest, streams, len(blob))


def _inflate(packed: bytes) -> str:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(packed, MAX_MANIFEST + 1)
    except zlib.error:
        raise FormatError("manifest stream is corrupt") from None
    need(d.eof and not d.unused_data and len(raw) <= MAX_MANIFEST,
         "manifest stream is truncated, too long or has trailing bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("manifest is not UTF-8") from None


def _parse_json(text: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError):  # incl. integers over 4,300 digits
        raise FormatError("manifest is not valid JSON") from None
    need(isinstance(manifest, dict), "manifest is not an object")
    return manifest


def _split_streams(table: Any, data: bytes, file_bytes: int) -> list[tuple[list[Any], bytes]]:
    """(row, bytes) per stream; rows are [coder, bits, count, length, crc32]."""
    need(isinstance(table, list), "manifest 'streams' must be a list")
    budget = max(MIN_BUDGET, ELEMENTS_PER_BYTE * file_bytes)
    out, pos = [], 0
    for i, row in enumerate(table):
        need(isinstance(row, list) and len(row) == 5 and isinstance(row[0], str)
             and all(is_int(v) for v in row[1:]), f"bad stream record {i}")
        _, bits, count, length, crc = row
        need(1 <= bits <= 32 and 0 <= count <= budget and 0 <= length <= len(data) - pos,
             f"stream {i} has out-of-range width, count or length")
        chunk = data[pos: pos + length]
        need(zlib.crc32(chunk) == crc, f"stream {i} checksum mismatch")
        out.append((row, chunk))
        pos += length
    need(pos == len(data), "data holds bytes that no stream uses")
    return out
