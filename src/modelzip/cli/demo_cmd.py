"""modelzip demo: train, prune 90%, fine-tune, quantize to 8 bits, save, reload, compare."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..demo import run_demo
from .common import add_json, emit


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="compress LeNet-300-100 end to end and print a table")
    p.epilog = "Trains the model, runs mz.compress with the built-in 'demo' recipe."
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"])
    p.add_argument("--data-root", default=None, help="folder holding fashion-mnist/")
    p.add_argument("--out", default="out", help="folder for the .mzip and baseline files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    res = run_demo(args.dataset, args.out, seed=args.seed, progress=not args.no_progress,
                   root=args.data_root)
    b, c = res["baseline"], res["compressed"]
    res["ratio"] = b["bytes"] / c["bytes"]
    res["latency_ratio"] = b["latency_ms"] / c["latency_ms"]
    table = Table(title=f"modelzip demo: LeNet-300-100 on {res['dataset']}, recipe 'demo', "
                        f"max accuracy drop {100 * res['max_drop']:.0f} point")
    for col in ("", "accuracy", "params", "nonzeros", "file bytes", "ratio", "latency ms",
                "speed-up"):
        table.add_column(col, justify="right")
    table.add_row("fp32 baseline", f"{100 * b['accuracy']:.2f}%", f"{b['params']:,}",
                  f"{b['nonzeros']:,}", f"{b['bytes']:,}", "1.0x", f"{b['latency_ms']:.3f}",
                  "1.00x")
    table.add_row("compressed (loaded)", f"{100 * c['accuracy']:.2f}%", f"{c['params']:,}",
                  f"{c['nonzeros']:,}", f"{c['bytes']:,}", f"{res['ratio']:.1f}x",
                  f"{c['latency_ms']:.3f}", f"{res['latency_ratio']:.2f}x")
    emit(args, res, table)
    if not args.json:
        for unit in res["changed_units"]:
            print(f"backed off to meet the budget: {unit}")
        print(f"wrote {res['files']['mzip']} (pruned, 8-bit codes, loaded back for this "
              f"table), {res['files']['fp32']} and {res['files']['report']}")
    return 0
