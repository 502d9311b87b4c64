"""modelzip inspect: the per-layer table of a .mzip (Deep Compression's Table 2)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..io.arch import describe
from ..io.inspect import checked_layer_table
from ..io.mzip import read_contents
from .common import add_json, emit

COLUMNS = ("layer", "weights", "kept %", "weight bits", "index bits",
           "weight bits (Huffman)", "index bits (Huffman)", "bytes")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("inspect", help="per-layer storage table of a .mzip file")
    p.add_argument("file", help="a .mzip file")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    contents = read_contents(args.file)
    rows, totals = checked_layer_table(contents)  # validated as load validates
    manifest = contents.manifest
    table = Table(title=f"{args.file}  (format v{manifest['version']})")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c == "layer" else "right")
    for r in rows + [totals]:
        table.add_row(r["layer"], f"{r['weights']:,}", f"{100 * r['kept']:.1f}",
                      f"{r['weight_bits']:.2f}", f"{r['index_bits']:.2f}",
                      f"{r['weight_bits_huffman']:.2f}", f"{r['index_bits_huffman']:.2f}",
                      f"{r['bytes']:,}")
    emit(args, {"file": args.file, "arch": manifest.get("arch"), "layers": rows,
                "total": totals}, table)
    if not args.json:
        print(f"architecture: {describe(manifest.get('arch'))}")
        print(f"fp32 weights: {totals['fp32_bytes']:,} B   file: {totals['file_bytes']:,} B "
              f"(other tensors {totals['other_bytes']:,} B)   ratio: {totals['ratio']:.1f}x")
    return 0
