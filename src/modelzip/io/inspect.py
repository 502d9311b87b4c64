"""Per-layer storage accounting of a .mzip (Deep Compression's Table 2 layout)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

WEIGHT_NAMES = ("weight",)


def _streams_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    refs = []
    for holder in (entry, entry.get("values") or {}):
        if isinstance(holder.get("data"), dict):
            refs.append(holder["data"])
    return refs


def _owner(key: str) -> tuple[str, str]:
    fqn, _, name = key.rpartition(".")
    base = name.split("_", 1)[0]
    return fqn, base


def layer_table(manifest: dict[str, Any], streams: dict[str, bytes],
                file_bytes: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per weight tensor: weights, kept fraction, bits per kept weight for values
    and indices (raw and after entropy coding), bytes; plus a totals row."""
    acc: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: {
        "weights": 0, "kept": None, "vbits": 0, "vbits_c": 0, "ibits": 0, "ibits_c": 0})
    other = 0
    for e in manifest["tensors"]:
        fqn, base = _owner(e["key"])
        refs = _streams_of(e)
        raw = sum(8 * r["raw_len"] for r in refs)
        coded = sum(8 * r["len"] for r in refs)
        if base not in WEIGHT_NAMES:
            other += coded // 8
            continue
        row = acc[(fqn, base)]
        n = math.prod(e["shape"])
        if e["codec"] == "pattern":
            row["kept"] = e["pattern"]["kept"]
            row["ibits"] += raw
            row["ibits_c"] += coded
        else:
            if e["key"].endswith(("_codes", base)) or e["key"].endswith(f".{base}"):
                row["weights"] = max(row["weights"], n)
            row["vbits"] += raw
            row["vbits_c"] += coded
    rows = []
    for (fqn, base), r in acc.items():
        n = r["weights"] or 1
        kept = r["kept"] if r["kept"] is not None else n
        k = max(kept, 1)
        rows.append({
            "layer": f"{fqn}.{base}" if fqn else base, "weights": r["weights"],
            "kept": kept / n, "weight_bits": r["vbits"] / k, "index_bits": r["ibits"] / k,
            "weight_bits_coded": r["vbits_c"] / k, "index_bits_coded": r["ibits_c"] / k,
            "bytes": (r["vbits_c"] + r["ibits_c"]) // 8,
        })
    total_w = sum(r["weights"] for r in rows)
    total_k = sum(r["kept"] * r["weights"] for r in rows) or 1
    fb = file_bytes if file_bytes is not None else sum(len(s) for s in streams.values())
    fp32 = 4 * total_w
    totals = {
        "layer": "total", "weights": total_w, "kept": total_k / max(total_w, 1),
        "weight_bits": sum(r["weight_bits"] * r["kept"] * r["weights"] for r in rows) / total_k,
        "index_bits": sum(r["index_bits"] * r["kept"] * r["weights"] for r in rows) / total_k,
        "weight_bits_coded": sum(r["weight_bits_coded"] * r["kept"] * r["weights"]
                                 for r in rows) / total_k,
        "index_bits_coded": sum(r["index_bits_coded"] * r["kept"] * r["weights"]
                                for r in rows) / total_k,
        "bytes": sum(r["bytes"] for r in rows), "other_bytes": other,
        "file_bytes": fb, "fp32_bytes": fp32, "ratio": fp32 / fb if fb else 0.0,
    }
    return rows, totals
