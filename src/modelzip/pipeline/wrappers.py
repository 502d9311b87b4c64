"""Classic pipelines as thin wrappers over the runner: ``prune_until`` (the seeds' loop)
and ``deep_compression`` (Han, Mao & Dally, ICLR 2016: prune, share, Huffman-code).

Both are lists of actions run through :func:`.runner.attempt`, so they use the same
requirement (threshold formula), history records and handlers as ``mz.compress``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from ..clustering import Cluster
from ..config import Config
from ..errors import ConfigError
from ..pruning import Magnitude, cubic_schedule
from ..select import weight_layers
from .requirement import Evaluate, NoRequirement, Requirement
from .runner import Action, RunContext, attempt
from .steps import Distill, Finetune

CONV = ("Conv1d", "Conv2d")


def _recover_action(recover: Callable[..., Any] | None, train_data: Iterable[Any],
                    epochs: float, lr: float, progress: bool) -> Action:
    if recover is None:
        return Finetune(epochs=float(epochs), lr=float(lr))
    return lambda m: recover(m, train_data, epochs=epochs, lr=lr, progress=progress)


def _restore(model: nn.Module, good: nn.Module) -> None:
    """Make ``model`` (the caller's object) hold ``good``'s state and structure."""
    model.__dict__.update(good.__dict__)


def prune_until(model: nn.Module, cfg: Config, train_data: Iterable[Any], *,
                evaluate: Evaluate, levels: Iterable[float], max_drop: float = 0.01,
                relative: bool = False, epochs_per_step: float = 1.0, lr: float = 1e-3,
                field: str | None = None, progress: bool = True,
                recover: Callable[..., nn.Module] | None = None) -> list[dict[str, Any]]:
    """Evaluate, prune a little more, fine-tune, evaluate, repeat (in place).

    ``cfg``'s strength (its knob's field, or ``field``) goes through the increasing
    ``levels``; the loop stops at the first level that breaks the requirement and
    restores the last level that met it. Returns one record per level (``accepted``).
    """
    knob = cfg.knob()
    name = field or (knob.field if knob is not None else None)
    if name is None:
        raise ConfigError(f"{type(cfg).__name__} has no strength to raise step by step")
    req = Requirement.of(evaluate, model, max_drop, relative)
    ctx = RunContext(evaluate, req, train_data, progress=progress, measure_bytes=False)
    history: list[dict[str, Any]] = [{name: 0.0, "metric": req.baseline, "accepted": True}]
    good = model
    step = _recover_action(recover, train_data, epochs_per_step, lr, progress)
    for level in levels:
        trial, att = attempt(good, [cfg.replace(**{name: level}), step], ctx, f"{name}={level}")
        history.append({name: level, "metric": att.metric, "accepted": att.passed})
        if not att.passed:
            break
        good = trial
    if good is not model:
        _restore(model, good)
    return history


def _deep_check(sparsity: Any, steps: int, conv_bits: int, fc_bits: int) -> None:
    values = sparsity.values() if isinstance(sparsity, dict) else [sparsity]
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise ConfigError(f"deep_compression: sparsity must be in [0, 1), got {s!r}")
    for name, v, lo, hi in (("steps", steps, 1, 100), ("conv_bits", conv_bits, 1, 16),
                            ("fc_bits", fc_bits, 1, 16)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"deep_compression: {name} must be an int in [{lo}, {hi}]")


def _prune_actions(sparsity: float | dict[str, float], frac: float) -> list[Action]:
    if isinstance(sparsity, dict):
        return [Magnitude(sparsity=s * frac, targets=[fqn]) for fqn, s in sparsity.items()]
    return [Magnitude(sparsity=sparsity * frac, scope="global")]


def _cluster_actions(model: nn.Module, conv_bits: int, fc_bits: int, init: str
                     ) -> list[Action]:
    """Per layer kind: 2**conv_bits shared values for convolutions, 2**fc_bits else."""
    conv = [f for f, _ in weight_layers(model, Cluster(targets=list(CONV)))]
    out: list[Action] = []
    if conv:
        out.append(Cluster(clusters=1 << conv_bits, init=init, targets=list(CONV)))
    out.append(Cluster(clusters=1 << fc_bits, init=init, ignore=[f"re:{f}" for f in conv]))
    return out


def _recover_step(teacher: nn.Module | None, temperature: float, alpha: float,
                  epochs: float, lr: float, weight_decay: float = 0.0) -> Config:
    """Fine-tune; with a ``teacher``, distil from it (alpha weights the soft targets)."""
    if teacher is None:
        return Finetune(epochs=float(epochs), lr=float(lr), weight_decay=float(weight_decay))
    return Distill(epochs=float(epochs), lr=float(lr), temperature=float(temperature),
                   alpha=float(alpha), weight_decay=float(weight_decay))


def deep_compression(model: nn.Module, train_data: Iterable[Any], *,
                     evaluate: Evaluate | None = None,
                     sparsity: float | dict[str, float] = 0.92, steps: int = 4,
                     prune_epochs: float = 1.0, prune_lr: float = 1e-3,
                     recover_epochs: float = 0.0, weight_decay: float = 0.0,
                     teacher: nn.Module | None = None, temperature: float = 4.0,
                     alpha: float = 0.5, conv_bits: int = 8, fc_bits: int = 5,
                     cluster_epochs: float = 1.0, cluster_lr: float = 1e-4,
                     init: str = "linear", path: str | os.PathLike | None = None,
                     progress: bool = True,
                     on_stage: Callable[[str, nn.Module], Any] | None = None
                     ) -> dict[str, Any]:
    """Run the three stages in place on ``model``; returns ``{"model", "history"}``.

    1. Prune iteratively on a cubic ramp to ``sparsity`` (a float ranks all weights
       globally; a dict gives each layer fqn its own target), recovering after each step
       (fine-tune, or distil from ``teacher``); ``recover_epochs`` adds one longer
       recovery after the last step. 2. Share weights: k-means with 2**conv_bits values
       for convolutions and 2**fc_bits for the rest (paper: 8 and 5), then fine-tune the
       centroids. 3. Huffman-code on save (``path``). ``history`` holds one record per
       stage (``metric`` when ``evaluate`` is given, ``file_bytes`` when ``path`` is).
    """
    _deep_check(sparsity, steps, conv_bits, fc_bits)
    ctx = RunContext(evaluate, NoRequirement(), train_data, teacher=teacher,
                     progress=progress, measure_bytes=False)
    history: list[dict[str, Any]] = []

    def stage(label: str, actions: list[Action], **extra: Any) -> None:
        _, att = attempt(model, actions, ctx, label, copy_model=False)
        history.append({"stage": label, **extra,
                        **({"metric": att.metric} if evaluate is not None else {})})

    def recovery(epochs: float, lr: float, wd: float = 0.0) -> Config:
        return _recover_step(teacher, temperature, alpha, epochs, lr, wd)

    stage("baseline", [])
    for i, s in enumerate(cubic_schedule(1.0, steps)):
        stage(f"prune {i + 1}/{steps}", [*_prune_actions(sparsity, s),
                                         recovery(prune_epochs, prune_lr, weight_decay)],
              fraction_of_target=s)
    if recover_epochs > 0:  # a longer decaying-lr recovery once the final masks are set
        stage("recover", [recovery(recover_epochs, prune_lr, weight_decay)])
    if on_stage is not None:
        on_stage("pruned", model)
    stage("cluster", _cluster_actions(model, conv_bits, fc_bits, init))
    stage("cluster + fine-tune", [recovery(cluster_epochs, cluster_lr)])
    if on_stage is not None:
        on_stage("clustered", model)
    if path is not None:
        from ..io.mzip import save

        history[-1]["file_bytes"] = save(model, path)
    return {"model": model, "history": history}
