"""mz.compress: run a recipe, evaluate after each unit, back off or push, keep the best.

A *unit* is one transform stage plus the recovery steps (finetune / distill / convert)
that follow it. After each unit the model is evaluated; if the requirement is broken the
unit is retried from its snapshot with a gentler setting (bisection over the config's
strength knob), and skipped if even the gentlest fails. With ``mode="max"`` a passing unit
is pushed harder while the requirement holds. Interrupts and time budgets stop the search
and return the best model found so far; ``save_best`` keeps it on disk after every unit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..measure import count_params, file_bytes, fp32_bytes
from ..select import weight_layers
from ..verbs import apply
from .recipe import Recipe, Stage, Step
from .sensitivity import per_layer_configs
from .strength import Knob, gentler, harsher, knob_of

Evaluate = Callable[[nn.Module], float]


@dataclass
class CompressionResult:
    """What ``compress`` returns: the best model meeting the requirement and the story."""

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    met: bool = True
    stopped: str = "completed"  # completed | interrupted | time budget

    @property
    def pareto(self) -> list[dict[str, Any]]:
        """Attempts not dominated in (metric higher, file bytes lower)."""
        pts = [h for h in self.history if h.get("bytes") is not None]
        return [p for p in pts if not any(
            q["metric"] >= p["metric"] and q["bytes"] <= p["bytes"]
            and (q["metric"], q["bytes"]) != (p["metric"], p["bytes"]) for q in pts)]


@dataclass
class _Context:
    evaluate: Evaluate
    train_data: Iterable[Any] | None
    calib_data: Iterable[Any] | None
    teacher: nn.Module | None
    threshold: float
    deadline: float | None
    progress: bool
    history: list[dict[str, Any]]
    per_layer: bool = False
    weakened: list[str] = field(default_factory=list)


def units(recipe: Recipe) -> list[tuple[Stage | None, list[Step]]]:
    """Group stages into (transform, following steps) units."""
    out: list[tuple[Stage | None, list[Step]]] = []
    for stage in recipe.stages:
        if isinstance(stage, Step):
            if not out:
                out.append((None, []))
            out[-1][1].append(stage)
        else:
            out.append((stage, []))
    return out


def _run_steps(model: nn.Module, steps: list[Step], ctx: _Context) -> None:
    for step in steps:
        if step.name == "finetune":
            from ..train import finetune

            _need_train(ctx, "finetune")
            finetune(model, ctx.train_data, progress=ctx.progress, **step.args)
        elif step.name == "distill":
            _distill(model, step, ctx)
        elif step.name == "convert":
            from .. import convert  # type: ignore[attr-defined]

            convert(model)


def _distill(model: nn.Module, step: Step, ctx: _Context) -> None:
    try:
        from ..distill import Distillation, distill
    except ImportError:
        raise ConfigError("the distill step needs modelzip's distillation module") from None
    _need_train(ctx, "distill")
    args = dict(step.args)
    kd = {k: args.pop(k) for k in ("temperature", "alpha", "loss") if k in args}
    distill(model, ctx.teacher, ctx.train_data, Distillation(**kd), progress=ctx.progress,
            **args)


def _need_train(ctx: _Context, what: str) -> None:
    if ctx.train_data is None:
        raise ConfigError(f"the recipe's '{what}' step needs train_data")


def _attempt(model: nn.Module, cfg: Config | list[Config] | None, steps: list[Step],
             ctx: _Context, label: str) -> tuple[nn.Module, dict[str, Any]]:
    trial = copy.deepcopy(model)
    t0 = time.time()
    cfgs = cfg if isinstance(cfg, list) else [] if cfg is None else [cfg]
    for c in cfgs:
        apply(trial, c, calib_data=ctx.calib_data, example_inputs=_example(ctx))
    _run_steps(trial, steps, ctx)
    metric = float(ctx.evaluate(trial))
    desc = [c.to_dict() for c in cfgs]
    rec = {"stage": label, "config": desc[0] if len(desc) == 1 else desc or None,
           "metric": metric, "passed": metric >= ctx.threshold,
           "bytes": attempt_bytes(trial), "seconds": round(time.time() - t0, 3)}
    ctx.history.append(rec)
    return trial, rec


def attempt_bytes(model: nn.Module) -> int:
    """File bytes of an attempt, saved with Huffman coding only: a fast, close upper bound
    of the final file (which also tries zstd and lzma per stream)."""
    return file_bytes(model, entropy="huffman")


def _example(ctx: _Context) -> Any:
    from ..batches import first_input

    for data in (ctx.calib_data, ctx.train_data):
        if data is not None:
            return first_input(data)
    return None


def _out_of_time(ctx: _Context) -> bool:
    return ctx.deadline is not None and time.time() > ctx.deadline


def _floor(model: nn.Module, cfg: Config, knob: Knob) -> Knob:
    """A sparsity knob cannot go below the sparsity the model already has."""
    if knob.field != "sparsity":
        return knob
    ws = [m.weight for _, m in weight_layers(model, cfg)]
    total = sum(w.numel() for w in ws)
    zeros = sum(int((w == 0).sum()) for w in ws)
    return replace(knob, gentlest=zeros / total if total else 0.0)


def _search_unit(model: nn.Module, cfg: Config | None, steps: list[Step], ctx: _Context,
                 label: str, mode: str, max_tries: int) -> nn.Module | None:
    """The best model of this unit meeting the requirement, or None (skip the unit)."""
    if ctx.per_layer and cfg is not None and knob_of(cfg) is not None:
        layered = per_layer_configs(model, cfg, ctx.evaluate, calib_data=ctx.calib_data)
        trial, rec = _attempt(model, layered, steps, ctx, label + " (per layer)")
        if rec["passed"]:
            return trial
    trial, rec = _attempt(model, cfg, steps, ctx, label)
    knob = knob_of(cfg) if cfg is not None else None
    knob = _floor(model, cfg, knob) if knob is not None else None
    if knob is None:
        return trial if rec["passed"] else None
    best, requested = (trial if rec["passed"] else None), getattr(cfg, knob.field)
    passed = requested if rec["passed"] else None
    failed = None if rec["passed"] else requested
    if passed is not None and mode != "max":
        return best
    for _ in range(max_tries):
        if _out_of_time(ctx):
            break
        nxt = (gentler(cfg, knob, None, failed) if passed is None
               else harsher(cfg, knob, passed, failed))
        if nxt is None:
            break
        trial, rec = _attempt(model, _with(cfg, knob, nxt), steps, ctx, label)
        if rec["passed"]:
            best, passed = trial, nxt
        else:
            failed = nxt
    if passed != requested:
        ctx.weakened.append(f"{label}: {knob.field} {requested} -> {passed}")
    return best


def _with(cfg: Config, knob: Knob, value: float) -> Config:
    return cfg.replace(**{knob.field: type(getattr(cfg, knob.field))(value)})


def compress(model: nn.Module, recipe: Recipe | str | list[Any], *, evaluate: Evaluate,
             train_data: Iterable[Any] | None = None, calib_data: Iterable[Any] | None = None,
             max_drop: float = 0.01, relative: bool = False, mode: str = "meet",
             time_budget: float | None = None, teacher: nn.Module | None = None,
             save_best: str | Path | None = None, max_tries: int = 4,
             per_layer: bool = False, progress: bool = True) -> CompressionResult:
    """Compress ``model`` with ``recipe`` while ``evaluate`` stays within ``max_drop``.

    ``max_drop`` is absolute (0.01 = one point of a 0-1 metric) unless ``relative=True``
    (a fraction of the baseline). ``mode="max"`` pushes each unit harder while the
    requirement holds. ``per_layer=True`` first tries per-layer strengths allocated from
    each layer's sensitivity (mixed sparsity / precision) before the uniform setting.
    The input model is not modified; the result holds the best model.
    """
    recipe = Recipe.load(recipe)
    if not callable(evaluate):
        raise ConfigError("evaluate must be a callable model -> float (higher is better)")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or max_drop < 0:
        raise ConfigError(f"max_drop must be a non-negative number, got {max_drop!r}")
    if mode not in ("meet", "max"):
        raise ConfigError(f"mode must be 'meet' or 'max', got {mode!r}")
    base_metric = float(evaluate(model))
    threshold = base_metric - max_drop * (abs(base_metric) if relative else 1.0)
    ctx = _Context(evaluate, train_data, calib_data, teacher or copy.deepcopy(model).eval(),
                   threshold, time.time() + time_budget if time_budget else None, progress,
                   [{"stage": "baseline", "config": None, "metric": base_metric,
                     "passed": True, "bytes": attempt_bytes(model), "seconds": 0.0}],
                   per_layer)
    best, stopped, skipped = copy.deepcopy(model), "completed", []
    try:
        for i, (cfg, steps) in enumerate(units(recipe)):
            if _out_of_time(ctx):
                stopped = "time budget"
                break
            label = f"{i + 1}:{type(cfg).__name__ if cfg is not None else 'steps'}"
            found = _search_unit(best, cfg, steps, ctx, label, mode, max_tries)
            if found is None:
                skipped.append(label)
                continue
            best = found
            if save_best is not None:
                from ..io.mzip import save

                save(best, save_best, info={"recipe": recipe.name, "partial": True})
    except KeyboardInterrupt:
        stopped = "interrupted"
    return _result(model, best, base_metric, threshold, ctx, stopped, skipped, recipe)


def _result(original: nn.Module, best: nn.Module, base_metric: float, threshold: float,
            ctx: _Context, stopped: str, skipped: list[str], recipe: Recipe
            ) -> CompressionResult:
    metric = float(ctx.evaluate(best))
    params, nonzeros = count_params(best)
    fb, base = file_bytes(best), fp32_bytes(original)
    failing = [h for h in ctx.history if not h["passed"]]
    metrics = {
        "recipe": recipe.name, "baseline_metric": base_metric, "metric": metric,
        "drop": base_metric - metric, "threshold": threshold, "params": params,
        "nonzeros": nonzeros, "file_bytes": fb, "fp32_bytes": base, "ratio": base / fb,
        "skipped_units": skipped, "attempts": len(ctx.history) - 1,
    }
    if failing:
        closest = max(failing, key=lambda h: h["metric"])
        metrics["closest_failing"] = {"stage": closest["stage"], "metric": closest["metric"],
                                      "bytes": closest["bytes"]}
    metrics["changed_units"] = ctx.weakened
    metrics["complete"] = not skipped and not ctx.weakened and stopped == "completed"
    # only passing attempts are kept, so this holds unless evaluate() is not deterministic
    met = metric >= threshold
    return CompressionResult(best, metrics, ctx.history, met, stopped)
