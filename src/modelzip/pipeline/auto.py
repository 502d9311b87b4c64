"""mz.auto_compress: search recipes with Optuna for the smallest (or fastest) model that
meets the requirement. Trials live in an Optuna storage (SQLite by default), so a search
resumes after being stopped and several processes can share one study."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from ..batches import first_input
from ..config import registered
from ..distributed.storage import open_storage
from ..distributed.study import create_or_load_study, run_until_total
from ..errors import ConfigError
from ..measure import model_latency
from .compress import CompressionResult, _Context, _result, _run_steps, attempt_bytes
from .recipe import Recipe, Step

QUANT_CHOICES = ("none", "w8", "w4", "cluster32", "cluster16")


def recipe_from_params(p: dict[str, Any]) -> Recipe:
    """The recipe a trial's parameters describe (sparsity, quantization, fine-tuning)."""
    stages: list[Any] = []
    epochs = p.get("epochs", 0)
    if p.get("sparsity", 0.0) > 0:
        stages.append({"Magnitude": {"sparsity": round(p["sparsity"], 3), "scope": "global"}})
        if epochs:
            stages.append({"finetune": {"epochs": epochs, "lr": p.get("lr", 5e-4)}})
    q = p.get("quant", "none")
    if q.startswith("w"):
        stages.append({"WeightOnly": {"bits": int(q[1:]), "group_size": None}})
    elif q.startswith("cluster"):
        stages.append({"Cluster": {"clusters": int(q[7:])}})
        if epochs:
            stages.append({"finetune": {"epochs": 1, "lr": p.get("lr", 5e-4) / 5}})
    if not stages:
        stages.append({"evaluate": {}})
    return Recipe(stages, name="auto")


def _suggest(trial: Any, has_train: bool) -> dict[str, Any]:
    quant = [q for q in QUANT_CHOICES if not q.startswith("cluster") or "Cluster" in registered()]
    p = {"sparsity": trial.suggest_float("sparsity", 0.0, 0.95),
         "quant": trial.suggest_categorical("quant", quant)}
    if has_train:
        p["epochs"] = trial.suggest_int("epochs", 0, 2)
    return p


def _apply(model: nn.Module, recipe: Recipe, ctx: _Context) -> nn.Module:
    from ..verbs import apply

    m = copy.deepcopy(model)
    for stage in recipe.stages:
        if isinstance(stage, Step):
            _run_steps(m, [stage], ctx)
        else:
            apply(m, stage, calib_data=ctx.calib_data, example_inputs=_example(ctx))
    return m


def _example(ctx: _Context) -> Any:
    for data in (ctx.calib_data, ctx.train_data):
        if data is not None:
            return first_input(data)
    return None


def _constrain(trial: Any, shortfall: float) -> None:
    """Tell the sampler the trial is infeasible when ``shortfall`` > 0."""
    trial.set_user_attr("shortfall", shortfall)
    if hasattr(trial, "set_constraint"):  # Optuna >= 5
        trial.set_constraint("metric_shortfall", shortfall)


def auto_compress(model: nn.Module, *, evaluate: Callable[[nn.Module], float],
                  max_drop: float, objective: str = "size", trials: int = 20,
                  storage: str | None = None, study: str = "modelzip-auto",
                  train_data: Iterable[Any] | None = None,
                  calib_data: Iterable[Any] | None = None, relative: bool = False,
                  seed: int = 0, progress: bool = True) -> CompressionResult:
    """Search sparsity x quantization x fine-tuning for the smallest (``objective="size"``)
    or fastest (``"latency"``) model within ``max_drop`` of the baseline metric.

    ``storage``: sqlite/postgresql/mysql URL or ``journal:///path`` (default
    ``sqlite:///modelzip-auto.db`` in the working folder). ``trials`` is the study's total
    of finished trials: re-running with the same ``study`` resumes it, and processes sharing
    it (``modelzip worker``) finish exactly ``trials`` between them.
    """
    import optuna

    if objective not in ("size", "latency"):
        raise ConfigError(f"objective must be 'size' or 'latency', got {objective!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be a positive integer, got {trials!r}")
    base = float(evaluate(model))
    threshold = base - max_drop * (abs(base) if relative else 1.0)
    ctx = _Context(evaluate, train_data, calib_data, copy.deepcopy(model).eval(), threshold,
                   None, False, [])
    example = _example(ctx) if objective == "latency" else None
    if objective == "latency" and example is None:
        raise ConfigError("objective='latency' needs train_data or calib_data for inputs")
    store = open_storage(storage, default=Path.cwd() / "modelzip-auto.db")
    sampler = optuna.samplers.TPESampler(seed=seed)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = create_or_load_study(store, study, directions=["minimize"], sampler=sampler)
    kept: dict[int, nn.Module] = {}

    def run(trial: Any) -> float:
        params = _suggest(trial, train_data is not None)
        t0 = time.time()
        m = _apply(model, recipe_from_params(params), ctx)
        metric = float(evaluate(m))
        size = attempt_bytes(m)
        value = size if objective == "size" else model_latency(m, example, repeats=10)
        trial.set_user_attr("metric", metric)
        trial.set_user_attr("bytes", size)
        _constrain(trial, threshold - metric)
        trial.set_user_attr("seconds", time.time() - t0)
        if metric >= threshold:
            kept.clear()
            kept[trial.number] = m
        return float(value)

    # ``trials`` is the study's total of finished trials, over every process and run
    with tqdm(total=trials, desc="auto", disable=not progress, unit="trial") as bar:
        run_until_total(st, trials, run, on_progress=lambda n: bar.update(n - bar.n))
    return _auto_result(model, st, kept, ctx, base, threshold)


def _auto_result(model: nn.Module, st: Any, kept: dict[int, nn.Module], ctx: _Context,
                 base: float, threshold: float) -> CompressionResult:
    done = [t for t in st.trials if t.value is not None]
    feasible = [t for t in done if t.user_attrs.get("metric", -1e30) >= threshold]
    history = [{"stage": f"trial {t.number}", "config": dict(t.params),
                "metric": t.user_attrs["metric"], "bytes": t.user_attrs["bytes"],
                "passed": t.user_attrs["metric"] >= threshold,
                "seconds": round(t.user_attrs.get("seconds", 0.0), 3)} for t in done]
    best, recipe = copy.deepcopy(model), Recipe([{"evaluate": {}}], name="auto")
    for best_t in sorted(feasible, key=lambda t: t.value)[:3]:
        m = kept.get(best_t.number)  # else found by another process: replay its recipe
        m = _apply(model, recipe_from_params(dict(best_t.params)), ctx) if m is None else m
        if float(ctx.evaluate(m)) >= threshold:  # the model written must meet the budget
            best, recipe = m, recipe_from_params(dict(best_t.params))
            break
    ctx.history[:] = [{"stage": "baseline", "metric": base, "passed": True,
                       "bytes": attempt_bytes(model), "config": None, "seconds": 0.0}] + history
    res = _result(model, best, base, threshold, ctx, "completed", [], recipe)
    res.metrics["trials"] = len(done)
    res.metrics["best_recipe"] = recipe.to_dict()
    return res
