"""modelzip search: neural architecture search on a dataset, trials in an Optuna storage."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ..data import info
from ..errors import ConfigError
from ..nas import (
    STRATEGIES,
    SearchOptions,
    accuracy_on,
    holdout,
    neg_perplexity_on,
    search_architecture,
)
from ..nas.space import FAMILIES
from ..nas.space import space as make_space
from ..train import accuracy, perplexity
from .common import DATASETS, add_json, emit, load_dataset
from .jobs import record


def add_parser(sub: Any) -> None:
    p = sub.add_parser("search", help="search an architecture (NAS) and save the winner")
    p.add_argument("--data", default="digits", help=f"dataset: {', '.join(DATASETS)}")
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument("--space", default=None,
                   help=f"a family ({', '.join(FAMILIES)}) or a YAML space file "
                        "(default: mlp for images, tiny_gpt for text)")
    p.add_argument("--strategy", default="tpe", choices=STRATEGIES)
    p.add_argument("--trials", type=int, default=20,
                   help="total of finished trials in the study (all runs and workers)")
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs per trial")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--retrain-epochs", type=float, default=None,
                   help="epochs to retrain the winner (default: --epochs)")
    p.add_argument("--storage", default="sqlite:///modelzip-search.db",
                   help="sqlite file/URL, postgresql://..., mysql://... or "
                        "journal:///shared/path.log")
    p.add_argument("--study", default=None, help="study name (default: nas-<family>-<strategy>)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--max-params", type=int, default=None)
    p.add_argument("--max-macs", type=int, default=None)
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--objective", action="append", default=[],
                   choices=["params", "macs", "latency_ms"],
                   help="add a second objective (Pareto front of metric against it)")
    p.add_argument("--strategy-option", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. population=10 (evolution), epochs=2 (darts)")
    p.add_argument("--train-limit", type=int, default=None, help="use only N training images")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of the training data held out to score trials")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="save the winner as this .mzip")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)
    p.set_defaults(func=run)


def _options(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = float(value) if sep else None
        except ValueError:
            out[key] = None
        if out[key] is None:
            raise ConfigError(f"--strategy-option {item!r}: expected KEY=NUMBER")
    return out


JOB_KEYS = ("data", "data_root", "space", "strategy", "epochs", "lr", "retrain_epochs",
            "max_params", "max_macs", "max_latency_ms", "objective", "strategy_option",
            "train_limit", "val_fraction", "threads", "seed")


def run(args: Any) -> int:
    if not 0 < args.val_fraction < 1:
        raise ConfigError("--val-fraction must lie in (0, 1)")
    return execute(args, load_data(args), record_job=True)


def load_data(args: Any) -> tuple[Any, bool, Any, Any]:
    kw = {"train_limit": args.train_limit} if args.train_limit and args.data != "shakespeare" \
        else {}
    split = load_dataset(args.data, args.data_root, **kw)
    text = "vocab_size" in info(split)
    train, val = holdout(split.train, args.val_fraction, seed=args.seed)
    return split, text, train, val


def execute(args: Any, data: tuple[Any, bool, Any, Any], record_job: bool = False,
            write: bool = True) -> int:
    """Run the search to its total of trials; with ``write``, retrain, save and print."""
    split, text, train, val = data
    args.space = args.space or ("tiny_gpt" if text else "mlp")
    if args.study is None:
        args.study = f"nas-{make_space(args.space, train).family}-{args.strategy}"
    if record_job and args.storage is not None:  # lets `modelzip worker` join this study
        record(args, "search", JOB_KEYS, storage=args.storage, study=args.study,
               directions=["maximize"] + ["minimize"] * len(args.objective))
    evaluate = neg_perplexity_on(val, 20) if text else accuracy_on(val)
    limits = {"params": args.max_params, "macs": args.max_macs,
              "latency_ms": args.max_latency_ms}
    options = SearchOptions(
        epochs=args.epochs, lr=args.lr,
        constraints={k: v for k, v in limits.items() if v is not None},
        objectives=["metric", *args.objective], study=args.study, workers=args.workers,
        strategy_options=_options(args.strategy_option),
        retrain_epochs=args.retrain_epochs if write else 0, save=args.out if write else None,
        seed=args.seed, threads=args.threads, progress=not args.no_progress)
    result = search_architecture(
        args.space, evaluate=evaluate, trials=args.trials,
        strategy=args.strategy, storage=args.storage, train_data=train, options=options)
    if not write:
        return 0
    m = result.model
    test = {"test_perplexity": perplexity(m, split.test, max_batches=50)} if text else \
        {"test_accuracy": accuracy(m, split.test)}
    payload = {"data": args.data, "strategy": args.strategy, "study": result.study,
               "storage": args.storage, "sample": result.sample, **result.metrics, **test,
               "file": result.path, "seconds": round(result.seconds, 2),
               "pareto": [{k: r[k] for k in ("number", "metric", "params", "macs", "sample")}
                          for r in result.pareto]}
    table = Table(title=f"modelzip search: {args.strategy} on {args.data} "
                        f"({result.metrics['trials']} trials, study {result.study})")
    for col in ("trial", "metric", "params", "MACs", "architecture"):
        table.add_column(col, justify="left" if col == "architecture" else "right")
    for r in result.pareto:
        table.add_row(str(r["number"]), f"{r['metric']:.4f}", f"{r['params']:,}",
                      f"{r['macs']:,}", str(r["sample"]))
    emit(args, payload, table)
    if not args.json:
        name, value = next(iter(test.items()))
        print(f"winner (trial {result.metrics['trial']}): {result.sample}\n"
              f"retrained: validation {result.metrics['metric']:.4f}, {name} {value:.4f}"
              + (f"; saved to {result.path}" if result.path else ""))
    return 0
