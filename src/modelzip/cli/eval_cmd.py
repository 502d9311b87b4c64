"""modelzip eval: evaluate a .mzip on a dataset."""

from __future__ import annotations

from typing import Any

from ..io.mzip import load
from ..measure import count_params
from .common import DATASETS, add_json, emit
from .workflow import add_trust_code, file_metric


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a .mzip model on a dataset")
    p.add_argument("file", help="a .mzip file")
    p.add_argument("--data", default="digits",
                   help=f"dataset: {', '.join(DATASETS)}, a text file, or 'sentences' "
                        "(embedding fidelity of an encoder to --baseline)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--baseline", default=None,
                   help="the original model's .mzip (needed with --data sentences)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer folder for --data sentences (default: all-MiniLM-L6-v2's)")
    add_trust_code(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    model = load(args.file, trust_code=args.trust_code)
    baseline = load(args.baseline, trust_code=args.trust_code) if args.baseline else None
    name, metric, _ = file_metric(args, baseline)
    params, nonzeros = count_params(model)
    out: dict[str, Any] = {"file": args.file, "data": args.data, "params": params,
                           "nonzeros": nonzeros, name: metric(model)}
    emit(args, out)
    return 0
