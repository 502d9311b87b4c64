"""Mutations of a valid .mzip for robustness testing (used by tests and the benchmark).

Three families: random byte flips anywhere in the file, truncations, and edits of the
manifest that keep its checksum valid (so that they reach the deep validation).
"""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

from . import safetensors_io as stio

_WILD: list[Any] = [0, -1, 1, 2, 7, 255, 1 << 16, 1 << 31, 1 << 40, 10 ** 30, -(1 << 33), 0.5,
                    float("1e308"), True, None, "", "x", "raw", "huffman", "relidx", "bitmask",
                    "float16", "int64", "masked", [], [1, 2], {}, {"kind": "codebook"}]


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


def _edit(manifest: Any, rng: random.Random) -> Any:
    path = rng.choice(_paths(manifest)[1:] or [()])
    if not path:
        return rng.choice(_WILD)
    parent = manifest
    for p in path[:-1]:
        parent = parent[p]
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


def edit_manifest(blob: bytes, rng: random.Random) -> bytes:
    """Change one value of the (v2) manifest, re-compressing it with a valid checksum."""
    arrays, meta = stio.loads(blob)
    manifest = json.loads(zlib.decompress(arrays["manifest"]))
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        manifest = _edit(manifest, rng)
    packed = zlib.compress(json.dumps(manifest).encode())
    meta = dict(meta, manifest_crc32=str(zlib.crc32(packed)))
    return stio.dumps({"manifest": packed, "data": arrays["data"]}, meta)


MUTATIONS = {"flip": flip_bytes, "truncate": truncate, "manifest": edit_manifest}


def mutate(blob: bytes, rng: random.Random) -> tuple[str, bytes]:
    """(mutation name, mutated file bytes), never identical to ``blob``."""
    while True:
        name = rng.choice(tuple(MUTATIONS))
        out = MUTATIONS[name](blob, rng)
        if out != blob:
            return name, out
