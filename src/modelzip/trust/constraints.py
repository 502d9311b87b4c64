"""Budgets on the trust figures: ``constraints={"max_class_drop": 0.02, ...}``.

``mz.compress`` judges an attempt by one number (``evaluate``); a constraint adds a
requirement on how the compressed model differs from the original, checked on
``eval_data`` with :func:`~modelzip.trust.api.compare_outputs`. :class:`ConstraintGate`
is what the compress loop calls once per attempt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from .api import Outputs, compare_outputs


@dataclass(frozen=True)
class Rule:
    """Constraint ``name`` bounds report figure ``figure`` from above (``"max"``) or
    below (``"min"``); ``tasks`` are the report kinds that carry the figure."""

    figure: str
    bound: str
    tasks: tuple[str, ...]
    help: str


RULES: dict[str, Rule] = {
    "max_class_drop": Rule("max_class_drop", "max", ("classification",),
                           "largest per-class accuracy drop (0.02 = 2 points)"),
    "min_agreement": Rule("agreement", "min", ("classification", "language_model"),
                          "top-1 agreement with the original (0.98 = 98%)"),
    "max_ece_increase": Rule("ece_change", "max", ("classification",),
                             "increase in expected calibration error"),
    "max_kl": Rule("kl_mean", "max", ("classification", "language_model"),
                   "mean KL(original || compressed), nats"),
    "max_ppl_increase": Rule("ppl_change", "max", ("language_model",),
                             "perplexity increase (absolute)"),
    "min_cosine": Rule("cos_mean", "min", ("encoder",), "mean cosine to the original"),
    "min_cosine_p1": Rule("cos_p1", "min", ("encoder",),
                          "1st percentile of the cosine to the original"),
}


def validate_constraints(constraints: dict[str, Any] | None) -> dict[str, float]:
    """Constraints as ``{name: float}``; unknown names and non-numbers are ConfigErrors."""
    if constraints is None:
        return {}
    if not isinstance(constraints, dict):
        raise ConfigError(f"constraints must be a dict, got {type(constraints).__name__}")
    out = {}
    for name, value in constraints.items():
        if name not in RULES:
            raise ConfigError(f"unknown constraint {name!r}; known: {', '.join(RULES)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise ConfigError(f"constraint {name} must be a finite number, got {value!r}")
        out[name] = float(value)
    return out


def _where(report: dict[str, Any], name: str) -> str:
    if name == "max_class_drop" and "worst_class" in report:
        return f", class {report['worst_class']['class']}"
    return ""


def check_constraints(report: dict[str, Any], constraints: dict[str, Any]) -> list[str]:
    """The constraints that ``report`` (a :func:`mz.trust` dict) breaks, each as
    ``"name=value (limit L[, class k])"``; an empty list when all hold."""
    rules = validate_constraints(constraints)
    task = report.get("task")
    failed = []
    for name, limit in rules.items():
        rule = RULES[name]
        if task not in rule.tasks:
            raise ConfigError(f"constraint {name} does not apply to a {task} model "
                              f"(it needs: {', '.join(rule.tasks)})")
        value = float(report[rule.figure])
        bad = value > limit if rule.bound == "max" else value < limit
        if bad or math.isnan(value):
            failed.append(f"{name}={value:.4g} (limit {limit:g}{_where(report, name)})")
    return failed


class ConstraintGate:
    """Checks attempts of a compress run against ``constraints`` on ``eval_data``.

    The original model's outputs are computed once and reused for every attempt
    (classifiers and encoders; language models are recomputed, their logits are large).
    Calling the gate returns ``(failed, figures)``: the broken constraints (see
    :func:`check_constraints`) and the figures they judged, for the attempt's record.
    """

    def __init__(self, original: nn.Module, eval_data: Iterable[Any],
                 constraints: dict[str, Any], *, device: Any = "cpu",
                 task: str | None = None, max_batches: int | None = None):
        self.constraints = validate_constraints(constraints)
        if self.constraints and eval_data is None:
            raise ConfigError("constraints need eval_data (batches with labels, or "
                              "inputs only for an encoder)")
        self.original, self.data = original, eval_data
        self.device, self.task, self.max_batches = device, task, max_batches
        self.cache: list[Outputs] | None = None if shuffled(eval_data) else []

    def figures(self, model: nn.Module) -> dict[str, Any]:
        """The trust figures of ``model`` against the original (no robustness)."""
        report = compare_outputs(self.original, model, self.data, device=self.device,
                                 task=self.task, max_batches=self.max_batches,
                                 cache=self.cache)
        if report["task"] == "language_model":
            self.cache = None
        return report

    def __call__(self, model: nn.Module) -> tuple[list[str], dict[str, Any]]:
        if not self.constraints:
            return [], {}
        report = self.figures(model)
        judged = {RULES[n].figure: report[RULES[n].figure] for n in self.constraints}
        if "max_class_drop" in self.constraints:
            judged["worst_class"] = report["worst_class"]["class"]
        return check_constraints(report, self.constraints), judged


def shuffled(data: Any) -> bool:
    """A DataLoader that draws a new order every pass (its outputs cannot be cached)."""
    from torch.utils.data import DataLoader, RandomSampler

    return isinstance(data, DataLoader) and isinstance(data.sampler, RandomSampler)


def constraints_from_args(args: Any) -> dict[str, float]:
    """``{name: value}`` from argparse flags ``--max-class-drop`` etc. (None: unset)."""
    out = {}
    for name in RULES:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return validate_constraints(out)


def add_constraint_args(parser: Any) -> None:
    """``--max-class-drop``, ``--min-agreement``, ... (one per rule) on an argparse parser."""
    for name, rule in RULES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=None,
                            dest=name, help="constraint: " + rule.help.replace("%", "%%"))
