"""The one compression loop: attempts, units, back-off by a config's own knob, results.

An *attempt* copies the model, applies a list of actions (configs, or Python callables
for thin wrappers), evaluates it against the :class:`Requirement` and records it. A
*unit* is one transform followed by its steps; :func:`search_unit` backs a failing unit
off along the transform's knob (bisection, or a ladder walk) and, in ``mode="max"``,
pushes a passing one harder. ``compress``, ``auto_compress``, ``deep_compression`` and
``prune_until`` are all built on these functions.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..batches import first_input
from ..config import Config
from ..measure import file_bytes
from ..progress import note
from ..verbs import apply
from .requirement import Evaluate, Requirement, measure

Action = Config | Callable[[nn.Module], Any]


@dataclass
class RunContext:
    """Everything a run needs besides the model (no global state)."""

    evaluate: Evaluate | None
    requirement: Requirement
    train_data: Iterable[Any] | None = None
    calib_data: Iterable[Any] | None = None
    teacher: nn.Module | None = None
    device: str | None = None
    progress: bool = True
    deadline: float | None = None
    mode: str = "meet"
    max_tries: int = 4
    per_layer: bool = False
    measure_bytes: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)
    weakened: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # unit -> what failed

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def example(self) -> Any:
        for data in (self.calib_data, self.train_data):
            if data is not None:
                return first_input(data)
        return None

    def handler_kwargs(self) -> dict[str, Any]:
        """What every handler may use: transforms take calibration data and an example
        input, steps take the training data and teacher; each ignores the rest."""
        kw = {"calib_data": self.calib_data, "example_inputs": self.example(),
              "train_data": self.train_data, "teacher": self.teacher,
              "progress": self.progress}
        if self.device is not None:
            kw["device"] = self.device
        return kw


@dataclass
class Attempt:
    """One try: what was applied, what it scored, whether it passed, what it weighs."""

    stage: str
    configs: list[dict[str, Any]]
    metric: float | None
    failed: list[str]
    bytes: int | None
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.failed

    def record(self) -> dict[str, Any]:
        cfg: Any = self.configs[0] if len(self.configs) == 1 else self.configs or None
        return {"stage": self.stage, "config": cfg, "metric": self.metric,
                "passed": self.passed, "failed": list(self.failed), "bytes": self.bytes,
                "seconds": round(self.seconds, 3)}


def attempt_bytes(model: nn.Module) -> int:
    """Bytes of an attempt's file, quickly: coded with Huffman only for models of at most
    16 MiB (a close upper bound of the final file, which also tries zstd and lzma per
    stream), with the fast path above (what ``mz.save`` writes for them). Reports call it
    an estimate; the final figure is always the written file's."""
    return file_bytes(model, entropy="estimate")


def describe(cfg: Config) -> str:
    """``Magnitude(sparsity=0.9)``: the config with its knob setting, for status lines."""
    knob = cfg.knob()
    name = type(cfg).__name__
    return f"{name}({knob.field}={getattr(cfg, knob.field)})" if knob is not None else name


def apply_actions(model: nn.Module, actions: list[Action], ctx: RunContext,
                  label: str = "") -> nn.Module:
    """Apply configs through their registered handlers, callables directly, in order."""
    kw = {**ctx.handler_kwargs(), "label": label} if actions else {}
    for action in actions:
        if isinstance(action, Config):
            apply(model, action, **kw)
        else:
            action(model)
    return model


def attempt(model: nn.Module, actions: list[Action], ctx: RunContext, label: str, *,
            copy_model: bool = True) -> tuple[nn.Module, Attempt]:
    """Apply ``actions`` to a copy of ``model`` (or in place), evaluate and record."""
    trial = copy.deepcopy(model) if copy_model else model
    t0 = time.time()
    tries = sum(1 for h in ctx.history if h["stage"] == label) + 1
    what = " + ".join(describe(a) for a in actions if isinstance(a, Config)) or "steps"
    status = f"{label} attempt {tries}: {what}"
    apply_actions(trial, actions, ctx, status)
    metric = (measure(ctx.evaluate, trial, f"evaluate(model after {label})")
              if ctx.evaluate is not None else None)
    failed = ctx.requirement.failures(trial, metric) if metric is not None else []
    size = attempt_bytes(trial) if ctx.measure_bytes else None
    att = Attempt(label, [a.to_dict() for a in actions if isinstance(a, Config)], metric,
                  failed, size, time.time() - t0)
    ctx.history.append(att.record())
    if metric is not None:
        verdict = "passed" if att.passed else "failed: " + "; ".join(failed)
        note(f"{status} -> metric {metric:.4f}, {verdict}", progress=ctx.progress)
    return trial, att


def baseline_record(model: nn.Module, ctx: RunContext) -> None:
    """The first history entry: the model before compression."""
    size = attempt_bytes(model) if ctx.measure_bytes else None
    ctx.history.append(Attempt("baseline", [], ctx.requirement.baseline, [], size,
                               0.0).record())


@dataclass
class Unit:
    """One transform (None: steps only) and the steps that follow it."""

    transform: Config | None
    steps: list[Config]

    @property
    def actions(self) -> list[Action]:
        return ([self.transform] if self.transform is not None else []) + list(self.steps)

    def label(self, index: int) -> str:
        name = type(self.transform).__name__ if self.transform is not None else "steps"
        return f"{index + 1}:{name}"


def units(stages: list[Config]) -> list[Unit]:
    """Group recipe stages into units: each transform with the steps after it."""
    out: list[Unit] = []
    for stage in stages:
        if stage.kind == "step":
            if not out:
                out.append(Unit(None, []))
            out[-1].steps.append(stage)
        else:
            out.append(Unit(stage, []))
    return out


def search_unit(model: nn.Module, unit: Unit, ctx: RunContext, label: str
                ) -> nn.Module | None:
    """The best model of this unit meeting the requirement, or None (skip the unit)."""
    cfg = unit.transform
    knob = cfg.knob(model) if cfg is not None else None
    if ctx.per_layer and knob is not None:
        from .sensitivity import per_layer_configs

        layered = per_layer_configs(model, cfg, ctx.evaluate, calib_data=ctx.calib_data)
        trial, att = attempt(model, [*layered, *unit.steps], ctx, label + " (per layer)")
        if att.passed:
            return trial
    trial, att = attempt(model, unit.actions, ctx, label)
    if not att.passed:  # what decided that this unit is backed off or skipped
        ctx.reasons[label] = list(att.failed)
    if knob is None:
        return trial if att.passed else None
    requested = getattr(cfg, knob.field)
    best = trial if att.passed else None
    passed, failed = (requested, None) if att.passed else (None, requested)
    if passed is not None and ctx.mode != "max":
        return best
    for _ in range(ctx.max_tries):
        if ctx.out_of_time():
            break
        nxt = knob.between(passed, failed)
        if nxt is None:
            break
        trial, att = attempt(model, [cfg.at(nxt), *unit.steps], ctx, label)
        if att.passed:
            best, passed = trial, nxt
        else:
            failed = nxt
    if passed != requested:
        why = "; ".join(ctx.reasons.get(label, []))
        ctx.weakened.append(f"{label}: {knob.field} {requested} -> {passed}"
                            + (f" (decided by: {why})" if why else ""))
    return best


def run_units(model: nn.Module, stages: list[Config], ctx: RunContext,
              on_unit: Callable[[nn.Module], Any] | None = None) -> tuple[nn.Module, str]:
    """Search every unit in turn from the best model so far; returns (best, stopped)."""
    best, stopped = copy.deepcopy(model), "completed"
    try:
        for i, unit in enumerate(units(stages)):
            if ctx.out_of_time():
                stopped = "time budget"
                break
            label = unit.label(i)
            found = search_unit(best, unit, ctx, label)
            if found is None:
                ctx.skipped.append(label)
                continue
            best = found
            if on_unit is not None:
                on_unit(best)
    except KeyboardInterrupt:
        stopped = "interrupted"
    return best, stopped
