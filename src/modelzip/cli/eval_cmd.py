"""modelzip eval: evaluate a .mzip on a dataset."""

from __future__ import annotations

from typing import Any

from ..data import info
from ..io.mzip import load
from ..measure import count_params
from ..train import accuracy, perplexity
from .common import DATASETS, add_json, emit, load_dataset


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a .mzip model on a dataset")
    p.add_argument("file", help="a .mzip file")
    p.add_argument("--data", default="digits", help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None)
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    model = load(args.file)
    split = load_dataset(args.data, args.data_root)
    params, nonzeros = count_params(model)
    out: dict[str, Any] = {"file": args.file, "data": args.data, "params": params,
                           "nonzeros": nonzeros}
    if "vocab_size" in info(split):
        out["perplexity"] = perplexity(model, split.test)
    else:
        out["accuracy"] = accuracy(model, split.test)
    emit(args, out)
    return 0
