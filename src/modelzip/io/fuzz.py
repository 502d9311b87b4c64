"""Mutations of a valid .mzip for robustness testing (used by tests and the benchmark).

Generic families: random byte flips anywhere in the file, truncations, and edits of the
manifest that keep its checksum valid (so that they reach the deep validation). Targeted
families, one per class of defect found by hand (issue 13), all with valid checksums:

* ``semantic``  - plausible edits of what a model is built from: architecture record
  numbers (zoo kwargs, NAS depth/widths, HF config), layer specs (``group_size: 0``,
  huge ``in_features``), ``extra`` state (head counts), ``attrs``, dtypes, shapes;
* ``big_int``   - a JSON integer of over 4,300 digits, in the manifest or in the
  (unchecksummed) safetensors header;
* ``zstd_size`` - a stream replaced by a zstd frame whose header declares a huge size;
* ``huge_stream`` - a tensor declared millions of elements large, backed by a 5-byte
  single-symbol Huffman stream;
* ``long_lane`` - a Huffman stream re-encoded as one long decoder lane;
* ``v1``        - the file rewritten as format version 1, then edited (dict dtypes...).
"""

from __future__ import annotations

import json
import random
import re
import struct
import zlib
from typing import Any

from ..ops import huffman
from ..ops.pack import pack
from . import safetensors_io as stio
from .streams import coder

_WILD: list[Any] = [0, -1, 1, 2, 7, 255, 1 << 16, 1 << 31, 1 << 40, 10 ** 30, -(1 << 33), 0.5,
                    float("1e308"), True, None, "", "x", "raw", "huffman", "relidx", "bitmask",
                    "float16", "int64", "masked", [], [1, 2], {}, {"kind": "codebook"}]
_SCALE = (0, -1, 2, 3, 1 << 8, 1 << 16, 1 << 31, 1 << 62)
_DTYPES = ("float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32",
           "int64", "bool", {"a": 1}, ["float32"], 7)


def flip_bytes(blob: bytes, rng: random.Random) -> bytes:
    b = bytearray(blob)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256) if rng.random() < 0.5 else b[i] ^ (1 << rng.randrange(8))
    return bytes(b)


def truncate(blob: bytes, rng: random.Random) -> bytes:
    return blob[: rng.randrange(len(blob))]


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _parent(manifest: Any, path: tuple) -> Any:
    node = manifest
    for p in path[:-1]:
        node = node[p]
    return node


def _edit(manifest: Any, rng: random.Random) -> Any:
    path = rng.choice(_paths(manifest)[1:] or [()])
    if not path:
        return rng.choice(_WILD)
    parent = _parent(manifest, path)
    key, old = path[-1], parent[path[-1]]
    r = rng.random()
    if r < 0.15 and isinstance(parent, dict):
        del parent[key]
    elif r < 0.5 and isinstance(old, int) and not isinstance(old, bool):
        parent[key] = old + rng.choice((-1, 1, 8, -8, 1 << 20, old, -old - 1))
    elif r < 0.6 and isinstance(parent, list) and parent:
        parent.append(parent[0] if rng.random() < 0.5 else rng.choice(_WILD))
    else:
        parent[key] = rng.choice(_WILD)
    return manifest


# ------------------------------------------------------------ container round trip
def open_v2(blob: bytes) -> tuple[dict[str, Any], list[bytes], dict[str, str]]:
    """(manifest, stream bytes, metadata) of a valid version-2 file."""
    arrays, meta = stio.loads(blob)
    manifest = json.loads(zlib.decompress(arrays["manifest"]))
    data, streams, pos = arrays["data"], [], 0
    for row in manifest["streams"]:
        streams.append(data[pos: pos + row[3]])
        pos += row[3]
    return manifest, streams, meta


def close_v2(manifest: dict[str, Any], streams: list[bytes], meta: dict[str, str],
             text: str | None = None) -> bytes:
    """A version-2 file with valid checksums (stream rows' lengths and CRCs refreshed)."""
    for row, s in zip(manifest["streams"], streams):
        if isinstance(row, list) and len(row) == 5:
            row[3], row[4] = len(s), zlib.crc32(s)
    packed = zlib.compress((text or json.dumps(manifest)).encode())
    meta = dict(meta, manifest_crc32=str(zlib.crc32(packed)))
    return stio.dumps({"manifest": packed, "data": b"".join(streams)}, meta)


def edit_manifest(blob: bytes, rng: random.Random) -> bytes:
    """Change one value of the (v2) manifest, re-compressing it with a valid checksum."""
    arrays, meta = stio.loads(blob)
    manifest = json.loads(zlib.decompress(arrays["manifest"]))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        manifest = _edit(manifest, rng)
    packed = zlib.compress(json.dumps(manifest).encode())
    meta = dict(meta, manifest_crc32=str(zlib.crc32(packed)))
    return stio.dumps({"manifest": packed, "data": arrays["data"]}, meta)


# ------------------------------------------------------------------ targeted families
def _leaves(manifest: dict[str, Any]) -> list[tuple]:
    """Paths of what a model is built from: arch, specs, extra, attrs, dtypes, shapes."""
    out = [p for p in _paths(manifest) if p and p[0] in ("arch", "modules", "extra",
                                                         "attrs", "reparam")]
    for i, e in enumerate(manifest.get("tensors", [])):
        out += [("tensors", i, "dtype"), *[("tensors", i, "shape", j)
                                           for j in range(len(e.get("shape", [])))]]
    return out or [()]


def semantic(blob: bytes, rng: random.Random) -> bytes:
    manifest, streams, meta = open_v2(blob)
    path = rng.choice(_leaves(manifest))
    if not path:
        return flip_bytes(blob, rng)
    parent = _parent(manifest, path)
    key, old = path[-1], parent.get(path[-1]) if isinstance(parent, dict) else parent[path[-1]]
    if key == "dtype":
        parent[key] = rng.choice(_DTYPES)
    elif isinstance(old, int) and not isinstance(old, bool):
        parent[key] = rng.choice((old * rng.choice(_SCALE), old + rng.choice((-1, 1)),
                                  old // 2, 0, 1 << 31))
    elif isinstance(old, bool):
        parent[key] = not old
    else:
        parent[key] = rng.choice(_WILD)
    return close_v2(manifest, streams, meta)


def big_int(blob: bytes, rng: random.Random) -> bytes:
    digits = "9" * rng.randrange(4301, 6000)
    if rng.random() < 0.5:  # in the unchecksummed safetensors header
        (n,) = struct.unpack("<Q", blob[:8])
        head = re.sub(rb"\d+", digits.encode(), blob[8: 8 + n], count=1)
        head += b" " * (-len(head) % 8)
        return struct.pack("<Q", len(head)) + head + blob[8 + n:]
    manifest, streams, meta = open_v2(blob)
    text = json.dumps(manifest)
    hits = [m.start() for m in re.finditer(r"(?<=[\[:,])\d+", text)]
    i = rng.choice(hits)
    j = i + len(re.match(r"\d+", text[i:]).group())
    return close_v2(manifest, streams, meta, text[:i] + digits + text[j:])


def zstd_frame(declared: int) -> bytes:
    """A zstd frame whose header declares ``declared`` bytes (one tiny RLE block)."""
    block = 1 | (1 << 1) | (64 << 3)  # last block, RLE, 64 bytes
    return (struct.pack("<IB", 0xFD2FB528, 0xE0) + struct.pack("<Q", declared)
            + block.to_bytes(3, "little") + b"\x00")


def zstd_size(blob: bytes, rng: random.Random) -> bytes:
    manifest, streams, meta = open_v2(blob)
    i = rng.randrange(len(streams))
    manifest["streams"][i][0] = "zstd"
    streams[i] = zstd_frame(rng.choice((1 << 40, 8 << 30, 1 << 33, 64, 1 << 63)))
    return close_v2(manifest, streams, meta)


def huge_stream(blob: bytes, rng: random.Random) -> bytes:
    manifest, streams, meta = open_v2(blob)
    plain = [e for e in manifest["tensors"] if e.get("codec") in ("int", "dense")]
    e = rng.choice(plain)
    n = rng.choice((1 << 22, 1 << 25, 33_554_432, 1 << 28))
    e["shape"] = [n]
    row = manifest["streams"][e["data"]]
    if e["codec"] == "dense":
        store = e.get("store", e.get("dtype", "float32"))
        row[1], row[2] = 8, n * (2 if store in ("float16", "bfloat16") else 4)
    else:
        row[2] = n
    row[0] = "huffman"
    streams[e["data"]] = struct.pack("<BI", 0, 1)
    return close_v2(manifest, streams, meta)


def long_lane(blob: bytes, rng: random.Random) -> bytes:
    manifest, streams, meta = open_v2(blob)
    rows = [i for i, r in enumerate(manifest["streams"]) if r[1] <= 16 and r[2] >= 2]
    i = rng.choice(rows)
    name, bits, count = manifest["streams"][i][:3]
    sym = coder(name).decode(streams[i], count, bits)
    if len(set(sym[:64].tolist())) < 2:
        return flip_bytes(blob, rng)
    manifest["streams"][i][0] = "huffman"
    streams[i] = huffman.encode(sym, chunk=min(count, huffman.MAX_CHUNK))
    return close_v2(manifest, streams, meta)


def to_v1(blob: bytes) -> bytes:
    """The same model as a version-1 file (manifest JSON in the metadata, raw streams)."""
    manifest, streams, _ = open_v2(blob)
    out, entries = {}, []
    for e in manifest["tensors"]:
        holders = [e["values"]] if e.get("codec") == "masked" else [e]
        for h in holders:
            name, bits, count = manifest["streams"][h["data"]][:3]
            sym = coder(name).decode(streams[h["data"]], count, bits)
            raw = pack(sym, bits) if bits != 8 else sym.astype("uint8").tobytes()
            sid = f"s{len(out)}"
            out[sid] = raw
            h["data"] = {"id": sid, "kind": "values", "coder": "raw", "raw_len": len(raw),
                         "len": len(raw), "crc32": zlib.crc32(raw)}
            if h.get("codec") == "dense":
                h.setdefault("store", e.get("dtype", "float32"))
            elif h.get("codec") == "int":
                h.setdefault("signed", False)
        if e.get("codec") == "masked":
            fqn, _, nm = e["key"].rpartition(".")
            base = nm[: -len("_codes")] if nm.endswith("_codes") else nm
            e["mask"] = f"{fqn}.{base}_mask" if fqn else f"{base}_mask"
        e.setdefault("dtype", "float32")
        entries.append(e)
    man = {k: v for k, v in manifest.items() if k != "streams"}
    man.update(version=1, tensors=entries)
    for k in ("info", "modules", "reparam", "extra", "attrs"):
        man.setdefault(k, {})
    return stio.dumps(out, {"modelzip": json.dumps(man)})


_V1_CACHE: dict[int, bytes] = {}


def v1(blob: bytes, rng: random.Random) -> bytes:
    key = zlib.crc32(blob)
    if key not in _V1_CACHE:
        _V1_CACHE[key] = to_v1(blob)
    arrays, meta = stio.loads(_V1_CACHE[key])
    manifest = json.loads(meta["modelzip"])
    if rng.random() < 0.3:
        e = rng.choice(manifest["tensors"])
        holder = e["values"] if "values" in e and rng.random() < 0.5 else e
        holder[rng.choice(("dtype", "store", "mask", "bits"))] = rng.choice(_DTYPES)
    else:
        manifest = _edit(manifest, rng)
    return stio.dumps(arrays, {"modelzip": json.dumps(manifest)})


MUTATIONS = {"flip": flip_bytes, "truncate": truncate, "manifest": edit_manifest,
             "semantic": semantic, "big_int": big_int, "zstd_size": zstd_size,
             "huge_stream": huge_stream, "long_lane": long_lane, "v1": v1}


def mutate(blob: bytes, rng: random.Random,
           families: tuple[str, ...] | None = None) -> tuple[str, bytes]:
    """(mutation name, mutated file bytes), never identical to ``blob``."""
    names = families or tuple(MUTATIONS)
    while True:
        name = rng.choice(names)
        out = MUTATIONS[name](blob, rng)
        if out != blob:
            return name, out
