"""mz.compress: run a recipe, evaluate after each unit, back off or push, keep the best.

A thin wrapper over :mod:`.runner`: it measures the baseline, builds the
:class:`~.requirement.Requirement`, runs every unit of the recipe (backing a failing
unit off along its config's knob, skipping it if even the gentlest setting fails) and
assembles the result from the re-evaluated final model. Interrupts and time budgets stop
the search and return the best model so far; ``save_best`` keeps it on disk after
every unit.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ConfigError
from .recipe import Recipe
from .requirement import Check, Evaluate, Requirement
from .result import CompressionResult, build_result
from .runner import RunContext, baseline_record, run_units

__all__ = ["compress", "CompressionResult"]


def _check_options(mode: str, time_budget: Any, max_tries: Any) -> None:
    if mode not in ("meet", "max"):
        raise ConfigError(f"mode must be 'meet' or 'max', got {mode!r}")
    if time_budget is not None and (
            isinstance(time_budget, bool) or not isinstance(time_budget, (int, float))
            or not math.isfinite(time_budget) or time_budget <= 0):
        raise ConfigError(f"time_budget must be a positive number of seconds, "
                          f"got {time_budget!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 0:
        raise ConfigError(f"max_tries must be a non-negative integer, got {max_tries!r}")


def _constraint_checks(model: nn.Module, constraints: dict[str, float] | None,
                       eval_data: Iterable[Any] | None, device: str | None) -> list[Check]:
    """The trust constraints as requirement checks (none when no constraint is given)."""
    if not constraints:
        return []
    from ..trust.constraints import ConstraintGate

    gate = ConstraintGate(copy.deepcopy(model).eval(), eval_data, constraints,
                          device=device or "cpu")
    return [lambda m: gate(m)[0]]


def compress(model: nn.Module, recipe: Recipe | str | list[Any], *, evaluate: Evaluate,
             train_data: Iterable[Any] | None = None, calib_data: Iterable[Any] | None = None,
             max_drop: float = 0.01, relative: bool = False, mode: str = "meet",
             time_budget: float | None = None, teacher: nn.Module | None = None,
             save_best: str | Path | None = None, max_tries: int = 4,
             per_layer: bool = False, progress: bool = True, device: str | None = None,
             constraints: dict[str, float] | None = None, eval_data: Iterable[Any] | None = None
             ) -> CompressionResult:
    """Compress ``model`` with ``recipe`` while ``evaluate`` stays within ``max_drop``.

    ``max_drop`` is absolute (0.01 = one point of a 0-1 metric) unless ``relative=True``
    (a fraction of |baseline|). ``mode="max"`` pushes each unit harder while the
    requirement holds. ``per_layer=True`` first tries per-layer strengths allocated from
    each layer's sensitivity (mixed sparsity / precision) before the uniform setting.
    ``constraints`` (``{"max_class_drop": 0.02, "min_agreement": 0.98, ...}``, see
    :mod:`modelzip.trust.constraints`) are judged on ``eval_data`` against the original
    model; an attempt that breaks one is backed off like one that breaks the budget, and
    ``metrics["backoff_reasons"]`` says which requirement decided each unit.
    The input model is not modified; the result holds the best model.
    """
    recipe = Recipe.load(recipe)
    _check_options(mode, time_budget, max_tries)
    req = Requirement.of(evaluate, model, max_drop, relative,
                         _constraint_checks(model, constraints, eval_data, device))
    ctx = RunContext(evaluate, req, train_data, calib_data,
                     teacher or copy.deepcopy(model).eval(), device, progress,
                     time.time() + time_budget if time_budget else None, mode, max_tries,
                     per_layer)
    baseline_record(model, ctx)

    def keep(best: nn.Module) -> None:
        from ..io.mzip import save

        save(best, save_best, info={"recipe": recipe.name, "partial": True})

    best, stopped = run_units(model, recipe.stages, ctx,
                              keep if save_best is not None else None)
    return build_result(model, best, ctx, stopped, recipe.name)
