"""modelzip report: an HTML report (and terminal table) of a .mzip, optionally against a
baseline and on a dataset."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ..io.mzip import load
from ..report import report
from .common import add_json, emit, load_dataset
from .compare_cmd import add_trust_args, trust_kwargs
from .workflow import add_trust_code, file_metric


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="HTML report of a .mzip (per-layer storage, plots)")
    p.add_argument("file", help="a .mzip file")
    p.add_argument("--baseline", default=None, help="the uncompressed model (.mzip)")
    p.add_argument("--data", default=None,
                   help="dataset to evaluate on (optional; 'sentences' for an encoder's "
                        "embedding fidelity to --baseline)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for --data sentences")
    add_trust_code(p)
    p.add_argument("--out", default="report.html", help="HTML output path")
    add_trust_args(p)  # the trust section: with --baseline and --data
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    model = load(args.file, trust_code=args.trust_code)
    baseline = load(args.baseline, trust_code=args.trust_code) if args.baseline else None
    evaluate = example = None
    if args.data:
        name, metric, example = file_metric(args, baseline)
        sign = -1.0 if name == "perplexity" else 1.0  # the report wants higher = better

        def evaluate(m: Any) -> float:
            return sign * metric(m)
    rep = report(model, baseline, evaluate=evaluate, example_inputs=example,
                 title=f"modelzip report: {args.file}")
    if baseline is not None and args.data and args.data != "sentences":
        from ..trust.api import trust

        split = load_dataset(args.data, args.data_root)
        rep.trust = trust(baseline, model, split.test, **trust_kwargs(args))
    rep.to_html(args.out)
    if args.json:
        emit(args, {"summary": rep.summary, "layers": rep.layers, "total": rep.totals,
                    "trust": rep.trust, "html": args.out})
    else:
        console = Console(width=max(Console().width, 110))
        console.print(rep.summary_table())
        console.print(rep.table())
        if rep.trust:
            from ..report.trust_section import tables

            for t in tables(rep.trust):
                console.print(t)
        print(f"wrote {args.out}")
    return 0
