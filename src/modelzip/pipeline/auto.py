"""mz.auto_compress: search recipes with Optuna for the smallest (or fastest) model that
meets the requirement. Trials live in an Optuna storage (SQLite by default), so a search
resumes after being stopped and several processes can share one study."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from ..config import registered
from ..distributed.storage import open_storage
from ..distributed.study import create_or_load_study, run_until_total
from ..errors import ConfigError
from ..measure import model_latency
from ..progress import bar
from .recipe import Recipe
from .requirement import Evaluate, Requirement, measure
from .result import CompressionResult, build_result
from .runner import RunContext, apply_actions, attempt, baseline_record

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


def _constrain(trial: Any, shortfall: float) -> None:
    """Tell the sampler the trial is infeasible when ``shortfall`` > 0."""
    trial.set_user_attr("shortfall", shortfall)
    if hasattr(trial, "set_constraint"):  # Optuna >= 5
        trial.set_constraint("metric_shortfall", shortfall)


def auto_compress(model: nn.Module, *, evaluate: Evaluate,
                  max_drop: float, objective: str = "size", trials: int = 20,
                  storage: str | None = None, study: str = "modelzip-auto",
                  train_data: Iterable[Any] | None = None,
                  calib_data: Iterable[Any] | None = None, relative: bool = False,
                  seed: int = 0, progress: bool = True, device: str | None = None
                  ) -> CompressionResult:
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
    req = Requirement.of(evaluate, model, max_drop, relative)
    ctx = RunContext(evaluate, req, train_data, calib_data, copy.deepcopy(model).eval(),
                     device, progress=False)
    example = ctx.example() if objective == "latency" else None
    if objective == "latency" and example is None:
        raise ConfigError("objective='latency' needs train_data or calib_data for inputs")
    store = open_storage(storage, default=Path.cwd() / "modelzip-auto.db")
    sampler = optuna.samplers.TPESampler(seed=seed)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    st = create_or_load_study(store, study, directions=["minimize"], sampler=sampler)
    kept: dict[int, nn.Module] = {}

    def run(trial: Any) -> float:
        params = _suggest(trial, train_data is not None)
        m, att = attempt(model, list(recipe_from_params(params).stages), ctx,
                         f"trial {trial.number}")
        value = att.bytes if objective == "size" else model_latency(m, example, repeats=10)
        trial.set_user_attr("metric", att.metric)
        trial.set_user_attr("bytes", att.bytes)
        _constrain(trial, req.threshold - att.metric)
        trial.set_user_attr("seconds", att.seconds)
        if att.passed:
            kept.clear()
            kept[trial.number] = m
        return float(value)

    # ``trials`` is the study's total of finished trials, over every process and run
    with bar(total=trials, desc="auto: trials", progress=progress, unit="trial") as shown:
        run_until_total(st, trials, run, on_progress=lambda n: shown.update(n - shown.n))
    return _auto_result(model, st, kept, ctx)


def _auto_result(model: nn.Module, st: Any, kept: dict[int, nn.Module], ctx: RunContext
                 ) -> CompressionResult:
    """The best feasible trial's model (rebuilt when another process found it),
    re-evaluated against the requirement like every pipeline's final model."""
    threshold = ctx.requirement.threshold
    done = [t for t in st.trials if t.value is not None]
    feasible = [t for t in done if t.user_attrs.get("metric", -1e30) >= threshold]
    history = [{"stage": f"trial {t.number}", "config": dict(t.params),
                "metric": t.user_attrs["metric"], "bytes": t.user_attrs["bytes"],
                "passed": t.user_attrs["metric"] >= threshold,
                "seconds": round(t.user_attrs.get("seconds", 0.0), 3)} for t in done]
    best, recipe = copy.deepcopy(model), Recipe([{"evaluate": {}}], name="auto")
    for best_t in sorted(feasible, key=lambda t: t.value)[:3]:
        candidate = recipe_from_params(dict(best_t.params))
        m = kept.get(best_t.number)  # else found by another process: replay its recipe
        if m is None:
            m = apply_actions(copy.deepcopy(model), list(candidate.stages), ctx)
        if ctx.requirement.met_by(measure(ctx.evaluate, m)):  # the model written must pass
            best, recipe = m, candidate
            break
    ctx.history[:] = []
    baseline_record(model, ctx)
    ctx.history.extend(history)
    res = build_result(model, best, ctx, "completed", recipe.name)
    res.metrics["trials"] = len(done)
    res.metrics["best_recipe"] = recipe.to_dict()
    return res
