"""modelzip train: train a zoo model on a dataset and save it."""

from __future__ import annotations

from typing import Any

import torch

from .. import zoo
from ..devices import resolve_device
from ..errors import ConfigError
from ..io.mzip import save
from ..train import accuracy, perplexity, train
from .common import DATASETS, add_json, emit, load_dataset, zoo_for_data


def add_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a reference model and save it as .mzip")
    p.add_argument("--model", default="lenet300", help=f"zoo model: {', '.join(zoo.names())}")
    p.add_argument("--data", default="digits", help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto: where to train")
    p.add_argument("--out", required=True, help="output .mzip path")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    if args.epochs <= 0 or args.lr <= 0:
        raise ConfigError("--epochs and --lr must be positive")
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    split = load_dataset(args.data, args.data_root)
    model = zoo_for_data(args.model, split)
    train(model, split.train, epochs=args.epochs, lr=args.lr, progress=not args.no_progress,
          device=device)
    lm = args.model == "tiny_gpt"
    metric = perplexity(model, split.test, device=device) if lm else \
        accuracy(model, split.test, device=device)
    size = save(model, args.out, info={"dataset": args.data})
    emit(args, {"model": args.model, "data": args.data,
                "perplexity" if lm else "accuracy": metric, "file": args.out, "bytes": size})
    return 0
