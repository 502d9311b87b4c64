"""modelzip auto: search recipes with Optuna for the smallest model within the budget."""

from __future__ import annotations

from typing import Any

from ..distributed.storage import storage_url
from ..errors import BudgetError, ConfigError
from ..io.mzip import save
from ..pipeline import auto_compress
from .common import add_json, emit
from .jobs import record
from .workflow import add_model_args, resolve


def add_parser(sub: Any) -> None:
    p = sub.add_parser("auto", help="search compression settings (Optuna) under a budget")
    add_model_args(p)
    p.add_argument("--max-drop", type=float, default=0.01)
    p.add_argument("--relative", action="store_true")
    p.add_argument("--objective", choices=["size", "latency"], default="size")
    p.add_argument("--trials", type=int, default=20,
                   help="total of finished trials in the study (all runs and workers)")
    p.add_argument("--storage", default=None,
                   help="sqlite file/URL (default modelzip-auto.db), postgresql://..., "
                        "mysql://... or journal:///shared/path.log")
    p.add_argument("--study", default="modelzip-auto", help="study name (re-use to resume)")
    p.add_argument("--out", required=True, help="output .mzip")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)
    p.set_defaults(func=run)


JOB_KEYS = ("model", "weights", "data", "data_root", "train_epochs", "seed", "max_drop",
            "relative", "objective")


def run(args: Any) -> int:
    if args.trials < 1 or args.max_drop < 0:
        raise ConfigError("--trials must be >= 1 and --max-drop >= 0")
    args.storage = storage_url(args.storage, default="modelzip-auto.db")
    record(args, "auto", JOB_KEYS, storage=args.storage, study=args.study,
           directions=["minimize"])  # lets `modelzip worker` join this study
    return execute(args)


def execute(args: Any, write: bool = True, sampler_seed: int = 0) -> int:
    """Run the study to its total of trials; with ``write``, save and print the winner."""
    job = resolve(args, progress=not args.no_progress)
    res = auto_compress(job.model, evaluate=job.evaluate, max_drop=args.max_drop,
                        relative=args.relative, objective=args.objective, trials=args.trials,
                        storage=args.storage, study=args.study, train_data=job.train_data,
                        calib_data=job.calib_data, progress=not args.no_progress,
                        seed=sampler_seed, device=args.device)
    if not write:
        return 0
    if not res.met:
        raise BudgetError(f"the final model misses the budget ({res.metrics['metric']:.4f} < "
                          f"{res.metrics['threshold']:.4f}); nothing written")
    size = save(res.model, args.out, info={"recipe": "auto"})
    emit(args, {**res.metrics, "file": args.out, "file_bytes": size,
                "ratio": res.metrics["fp32_bytes"] / size,
                "pareto": res.pareto})
    return 0
