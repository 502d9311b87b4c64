"""Per-layer storage accounting of a .mzip: Deep Compression's Table 2 layout.

For every weight tensor: weights, percent kept, bits per kept weight for the values and
for the sparse index, both as stored before entropy coding (fixed width) and as
actually stored (after Huffman / the chosen coder), and bytes; plus totals and the
compression ratio (fp32 bytes of all tensors over the whole file).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from ..errors import FormatError
from ..ops.pack import packed_nbytes
from .manifest import Contents, split_key
from .restore import validate

WEIGHT_NAMES = ("weight",)


def _owner(key: str) -> tuple[str, str]:
    fqn, name = split_key(key)
    return fqn, name.split("_", 1)[0]


def _refs(e: dict[str, Any]) -> list[int]:
    out = []
    for holder in (e, e.get("values") if isinstance(e.get("values"), dict) else {}):
        if isinstance(holder.get("data"), int):
            out.append(holder["data"])
    return out


def _bits(c: Contents, ref: int) -> tuple[int, int]:
    """(fixed-width bits, stored bits) of stream ``ref`` (v2 files)."""
    _, bits, count, length, _ = c.streams[ref][0]
    return 8 * packed_nbytes(count, bits), 8 * length


def _v1_bits(e: dict[str, Any]) -> list[tuple[int, int]]:
    out = []
    for holder in (e, e.get("values") or {}):
        ref = holder.get("data")
        if isinstance(ref, dict):
            out.append((8 * ref["raw_len"], 8 * ref["len"]))
    return out


def checked_layer_table(c: Contents) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`layer_table` of a file that passes every check ``load`` makes (restore.validate),
    so that a file ``load`` rejects gives the same FormatError, never a crash."""
    validate(c)
    try:
        return layer_table(c)
    except (KeyError, TypeError, IndexError, ValueError, AttributeError, ArithmeticError) as exc:
        raise FormatError(f"inconsistent manifest: {type(exc).__name__}: {exc}"[:200]) from None


def layer_table(c: Contents) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per weight tensor plus a totals row (see the module docstring)."""
    acc: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "weights": 0, "kept": None, "vbits": 0, "vbits_c": 0, "ibits": 0, "ibits_c": 0})
    fp32 = other = 0
    for e in c.manifest["tensors"]:
        fqn, base = _owner(e["key"])
        n = math.prod(e["shape"])
        if e["key"].endswith("_codes") or (
                e.get("dtype", "float32").startswith(("float", "bfloat"))
                and not e["key"].endswith(("_codebook", "_scale"))):
            fp32 += 4 * n  # the fp32 tensors the forward pass sees
        sizes = _v1_bits(e) if c.manifest["version"] == 1 else [_bits(c, r) for r in _refs(e)]
        raw, coded = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
        if base not in WEIGHT_NAMES or e["key"].endswith("_codebook"):
            other += coded // 8
            continue
        row = acc[(fqn, base)]
        if e["codec"] == "pattern":
            row["kept"] = e["pattern"]["kept"]
            row["ibits"] += raw
            row["ibits_c"] += coded
        else:
            row["weights"] = max(row["weights"], n)
            row["vbits"] += raw
            row["vbits_c"] += coded
    rows = [_row(fqn, base, r) for (fqn, base), r in acc.items()]
    return rows, _totals(rows, other, fp32, c.size)


def _row(fqn: str, base: str, r: dict[str, Any]) -> dict[str, Any]:
    n = r["weights"] or 1
    kept = r["kept"] if r["kept"] is not None else n
    k = max(kept, 1)
    return {"layer": f"{fqn}.{base}" if fqn else base, "weights": r["weights"],
            "kept": kept / n, "weight_bits": r["vbits"] / k, "index_bits": r["ibits"] / k,
            "weight_bits_huffman": r["vbits_c"] / k, "index_bits_huffman": r["ibits_c"] / k,
            "bytes": (r["vbits_c"] + r["ibits_c"]) // 8}


def _totals(rows: list[dict[str, Any]], other: int, fp32: int, size: int) -> dict[str, Any]:
    total_w = sum(r["weights"] for r in rows)
    kept = [r["kept"] * r["weights"] for r in rows]
    total_k = sum(kept) or 1

    def avg(col: str) -> float:
        return sum(r[col] * k for r, k in zip(rows, kept)) / total_k

    return {"layer": "total", "weights": total_w, "kept": total_k / max(total_w, 1),
            **{c: avg(c) for c in ("weight_bits", "index_bits", "weight_bits_huffman",
                                   "index_bits_huffman")},
            "bytes": sum(r["bytes"] for r in rows), "other_bytes": other,
            "file_bytes": size, "fp32_bytes": fp32, "ratio": fp32 / size if size else 0.0}


def stream_symbols(c: Contents) -> list[dict[str, Any]]:
    """Every stream of a v2 file decoded: tensor key, role, width, symbols, stored coder.

    Lets benchmarks compare coders (Huffman, zstd, lzma) on exactly the same streams.
    """
    from .streams import coder

    out = []
    for e in c.manifest["tensors"]:
        role = "index" if e["codec"] == "pattern" else "values"
        for ref in _refs(e):
            (name, bits, count, length, _), data = c.streams[ref]
            out.append({"key": e["key"], "role": role, "bits": bits, "coder": name,
                        "bytes": length, "symbols": coder(name).decode(data, count, bits)})
    return out



