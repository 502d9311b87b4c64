"""modelzip compress: run a recipe under an accuracy budget, write the .mzip and a report."""

from __future__ import annotations

import copy
from typing import Any

from rich.table import Table

from ..errors import ConfigError
from ..io.mzip import save
from ..pipeline import Recipe, compress
from ..progress import note
from ..report import report
from ..trust.constraints import add_constraint_args, constraints_from_args
from . import stream_cmd
from .common import add_json, emit
from .workflow import add_model_args, resolve


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compress", help="compress a model with a recipe under an accuracy budget")
    add_model_args(p)
    p.add_argument("--recipe", required=True, help="built-in recipe name or a .yaml file")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="allowed metric drop (absolute; 0.005 = half a point of accuracy)")
    p.add_argument("--relative", action="store_true", help="max-drop is a fraction of baseline")
    p.add_argument("--mode", choices=["meet", "max"], default="meet",
                   help="meet: stop at the recipe's strength; max: push while the budget holds")
    p.add_argument("--per-layer", action="store_true",
                   help="try sensitivity-allocated per-layer strengths first")
    p.add_argument("--time-budget", type=float, default=None, help="seconds")
    p.add_argument("--out", required=True, help="output .mzip")
    p.add_argument("--report", default=None, help="HTML report path")
    p.add_argument("--no-progress", action="store_true")
    add_constraint_args(p)  # --max-class-drop, --min-agreement, ... judged on the test data
    stream_cmd.add_args(p)  # --stream: a safetensors folder compressed block by block
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    if args.max_drop < 0:
        raise ConfigError("--max-drop must be >= 0")
    if args.stream:
        return stream_cmd.run(args)
    recipe = Recipe.load(args.recipe)  # validate before any training
    progress = not args.no_progress
    job = resolve(args, progress=progress)
    baseline = copy.deepcopy(job.model)
    note(f"compressing with recipe '{recipe.name}' ({len(recipe.stages)} stages): evaluating "
         f"the baseline {job.metric_name} first", progress=progress)
    res = compress(job.model, recipe, evaluate=job.evaluate, train_data=job.train_data,
                   calib_data=job.calib_data, max_drop=args.max_drop, relative=args.relative,
                   mode=args.mode, time_budget=args.time_budget, per_layer=args.per_layer,
                   save_best=args.out, progress=progress, device=args.device,
                   constraints=constraints_from_args(args) or None, eval_data=job.eval_data)
    note(f"saving {args.out}", progress=progress)
    size = save(res.model, args.out, info={"recipe": recipe.name, "metric": job.metric_name,
                                           "value": res.metrics["metric"]})
    m = res.metrics
    m.update(file=args.out, file_bytes=size, ratio=m["fp32_bytes"] / size, met=res.met,
             stopped=res.stopped, metric_name=job.metric_name)
    if args.report:
        note(f"writing the report {args.report}", progress=progress)
        rep = report(res.model, baseline, result=res, example_inputs=job.example,
                     title=f"modelzip compress: {args.model} / {recipe.name}", file=args.out)
        rep.to_html(args.report)
        m["report"] = args.report
    emit(args, {**m, "history": res.history, "bytes_note": BYTES_NOTE}, _table(args, m))
    if not args.json:
        _explain(m, res.stopped)
    return 0


BYTES_NOTE = ("file_bytes is the size of the written file; history[].bytes and "
              "closest_failing.bytes are estimates (each attempt coded with Huffman only, or "
              "with the fast coders for models over 16 MiB)")


def _explain(m: dict[str, Any], stopped: str) -> None:
    """Say in words what the run could and could not do."""
    print(f"requirement: {m['metric_name']} >= {m['threshold']:.4f}  (baseline "
          f"{m['baseline_metric']:.4f}); result {m['metric']:.4f}; {m['attempts']} attempts")
    for u in m.get("changed_units", []):
        print(f"backed off  {u}")
    for u in m.get("skipped_units", []):
        print(f"skipped     {u} (no setting met the requirement)")
    if "closest_failing" in m and not m.get("complete"):
        c = m["closest_failing"]
        print(f"closest failing attempt: {c['stage']} reached {c['metric']:.4f} "
              f"at about {c['bytes']:,} bytes (estimate)")
    if not m.get("complete", True):
        print("not complete: " + "; ".join(str(r) for r in m.get("incomplete_because", [])))
    elif stopped != "completed":
        print(f"stopped early ({stopped}); the best model so far was saved")
    print(f"wrote {m['file']}" + (f" and {m['report']}" if m.get("report") else ""))


def _table(args: Any, m: dict[str, Any]) -> Table:
    t = Table(title=f"{args.model} with '{m['recipe']}' (max drop {args.max_drop})")
    for c in ("", m["metric_name"], "params", "nonzeros", "file bytes", "ratio"):
        t.add_column(c, justify="right")
    t.add_row("baseline (fp32)", f"{m['baseline_metric']:.4f}", f"{m['params']:,}",
              f"{m['params']:,}", f"{m['fp32_bytes']:,}", "1.0x")
    t.add_row("compressed", f"{m['metric']:.4f}", f"{m['params']:,}", f"{m['nonzeros']:,}",
              f"{m['file_bytes']:,}", f"{m['ratio']:.1f}x")
    return t
