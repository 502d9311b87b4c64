"""Knowledge distillation: train a student on a frozen teacher's soft targets.

``mz.distill(student, teacher, data, mz.Distillation(temperature, alpha), epochs=, lr=)``
minimises ``alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * hard loss`` (Hinton
et al. 2015; per token for language models), plus optional FitNets-style matching of
intermediate features (Romero et al. 2015) through learned projections when widths
differ. It runs on :func:`modelzip.train.fit`, so pruning masks and quantization codes
of a compressed student stay fixed: distillation is a drop-in recovery step after
compression, with the uncompressed model as teacher (see :func:`distill_recovery`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .batches import logits_of, split_batch, to_device
from .config import Config, ConfigError, check_choice, check_range, register
from .devices import placed
from .ops import kd
from .train import LossFn, fit, task_loss


def _not_a_transform(model: nn.Module, cfg: Config, **ctx: Any) -> None:
    raise ConfigError("Distillation is a training step, not a layer transform: call "
                      "mz.distill(student, teacher, train_data, cfg, epochs=..., lr=...)")


@register(_not_a_transform)
@dataclass
class Distillation(Config):
    """How a student learns from a teacher.

    ``temperature`` softens both distributions (T > 0); ``alpha`` in [0, 1] weighs the
    soft-target term against the hard-label loss (0 = plain training, 1 = soft targets
    only, labels not needed); ``loss``: "kl" (Hinton) or "mse" (logit matching);
    ``features``: ``{student_fqn: teacher_fqn}`` intermediate outputs to match, weighted
    by ``feature_weight``.
    """

    temperature: float = 1.0
    alpha: float = 0.3
    features: dict[str, str] | None = None
    loss: str = "kl"
    feature_weight: float = 1.0

    kind: ClassVar[str] = "distill"
    default_targets: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        check_range(self, "temperature", 0.0, float("inf"), lo_open=True, hi_open=True)
        check_range(self, "alpha", 0.0, 1.0)
        check_choice(self, "loss", kd.LOSSES)
        check_range(self, "feature_weight", 0.0, float("inf"), hi_open=True)
        if self.features is not None:
            if not isinstance(self.features, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in self.features.items()):
                raise ConfigError("Distillation.features must map student module names to "
                                  f"teacher module names, got {self.features!r}")
            self.features = dict(self.features)
        if self.targets or self.ignore:
            raise ConfigError("Distillation selects no layers: drop targets/ignore "
                              "(use features= to match intermediate outputs)")

    def knob(self, model: nn.Module | None = None) -> None:
        """None: how a student learns has no compression strength."""
        return None


class _Student(nn.Module):
    """The student plus the feature projections trained with it (discarded afterwards)."""

    def __init__(self, student: nn.Module, projections: list[nn.Module]):
        super().__init__()
        self.student = student
        self.projections = nn.ModuleList(projections)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The student's forward (so that DDP, wrapping this module, sees it)."""
        return self.student(*args, **kwargs)


@contextmanager
def _recording(model: nn.Module, names: list[str], who: str):
    """Forward hooks storing the outputs of the named modules into a dict."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise ConfigError(f"Distillation.features: the {who} has no module "
                                  f"{name!r}") from None
            handles.append(module.register_forward_hook(
                lambda m, a, out, name=name: store.__setitem__(name, logits_of(out))))
        yield store
    finally:
        for h in handles:
            h.remove()


def _projection(s: torch.Tensor, t: torch.Tensor, pair: str) -> nn.Module:
    """1x1 conv (4-D) or Linear (2-D/3-D) from the student's width to the teacher's."""
    if s.dim() != t.dim() or s.dim() < 2 or (s.dim() == 3 and s.shape[1] != t.shape[1]):
        raise ConfigError(f"Distillation.features {pair}: cannot match student output "
                          f"{tuple(s.shape)} to teacher output {tuple(t.shape)}")
    if s.dim() == 4:
        cs, ct = s.shape[1], t.shape[1]
        proj = nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1, bias=False)
    elif s.dim() in (2, 3):
        cs, ct = s.shape[-1], t.shape[-1]
        proj = nn.Identity() if cs == ct else nn.Linear(cs, ct, bias=False)
    else:
        raise ConfigError(f"Distillation.features {pair}: unsupported rank {s.dim()}")
    return proj.to(device=s.device, dtype=s.dtype)


def _project(proj: nn.Module, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s = proj(s)
    if s.dim() == 4 and s.shape[-2:] != t.shape[-2:]:
        s = F.adaptive_avg_pool2d(s, t.shape[-2:])
    return s


@torch.no_grad()
def _build_projections(student: nn.Module, teacher: nn.Module, cfg: Distillation,
                       batch: Any) -> list[nn.Module]:
    """Probe one batch (eval mode, no gradients) to size the feature projections."""
    pairs = list(cfg.features.items())
    args, kwargs, _ = split_batch(batch)
    was = student.training
    student.eval()
    try:
        with _recording(student, [s for s, _ in pairs], "student") as fs, \
                _recording(teacher, [t for _, t in pairs], "teacher") as ft:
            student(*args, **kwargs)
            teacher(*args, **kwargs)
    finally:
        student.train(was)
    return [_projection(fs[s], ft[t], f"{s}->{t}") for s, t in pairs]


def _peek(data: Iterable[Any]) -> Any:
    """The first batch, leaving the shuffling RNGs as they were (same data order after)."""
    gen = getattr(data, "generator", None)
    states = (torch.get_rng_state(), gen.get_state() if isinstance(gen, torch.Generator)
              else None)
    try:
        return next(iter(data))
    except StopIteration:
        raise ConfigError("train_data yielded no batch") from None
    finally:
        torch.set_rng_state(states[0])
        if states[1] is not None:
            gen.set_state(states[1])


def _check_pair(student: nn.Module, teacher: nn.Module) -> None:
    if student is teacher:
        raise ConfigError("the student is the teacher: pass copy.deepcopy(teacher)")
    shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
    if shared:
        raise ConfigError(f"the student shares {len(shared)} parameter tensor(s) with the "
                          "teacher, which must stay unchanged: pass copy.deepcopy(teacher)")


def _token_weight(kwargs: dict[str, Any], logits: torch.Tensor) -> torch.Tensor | None:
    mask = kwargs.get("attention_mask")
    return mask if logits.dim() == 3 and isinstance(mask, torch.Tensor) else None


def distill(student: nn.Module, teacher: nn.Module, train_data: Iterable[Any],
            cfg: Distillation | None = None, *, epochs: float, lr: float,
            loss: LossFn | None = None, evaluate: Callable[[nn.Module], float] | None = None,
            patience: int = 2, weight_decay: float = 0.0, schedule: str = "cosine",
            progress: bool = True, device: Any = None) -> nn.Module:
    """Train ``student`` in place on ``teacher``'s soft targets; returns the student.

    The teacher runs in eval mode without gradients and is never modified (its mode is
    restored afterwards). ``loss`` is the hard-label loss (cross-entropy by default).
    ``evaluate(student)`` (higher is better) enables early stopping with ``patience``.
    Masks and quantization codes of the student stay fixed, as in ``mz.finetune``.
    ``device``: student and teacher move there for the run and back afterwards.
    """
    cfg = Distillation() if cfg is None else cfg
    if not isinstance(cfg, Distillation):
        raise ConfigError(f"mz.distill needs a Distillation config, got {type(cfg).__name__}")
    _check_pair(student, teacher)
    hard_fn = loss or task_loss
    pairs = list((cfg.features or {}).items())
    was_training = teacher.training
    teacher.eval()
    try:
        with placed(device, student, teacher) as dev:
            projections = _build_projections(student, teacher, cfg,
                                             to_device(_peek(train_data), dev)) \
                if pairs else []
            wrapper = _Student(student, projections)
            with _recording(student, [s for s, _ in pairs], "student") as fs, \
                    _recording(teacher, [t for _, t in pairs], "teacher") as ft:
                step = _step_loss(teacher, cfg, hard_fn, pairs, fs, ft)
                fit(wrapper, train_data, epochs=epochs, lr=lr, step_loss=step,
                    weight_decay=weight_decay, schedule=schedule, progress=progress,
                    desc="distill", patience=patience, device=dev,
                    evaluate=(lambda w: evaluate(w.student)) if evaluate else None)
    finally:
        teacher.train(was_training)
    return student


def _step_loss(teacher: nn.Module, cfg: Distillation, hard_fn: LossFn,
               pairs: list[tuple[str, str]], fs: dict[str, torch.Tensor],
               ft: dict[str, torch.Tensor]) -> Callable[[_Student, Any], dict[str, Any]]:
    """The per-batch loss: hard, soft and feature terms, named for the progress bar."""
    need_teacher = cfg.alpha > 0 or bool(pairs)

    def step(wrapper: _Student, batch: Any) -> dict[str, torch.Tensor]:
        args, kwargs, target = split_batch(batch)
        out = wrapper(*args, **kwargs)  # through DDP under torchrun
        parts: dict[str, torch.Tensor] = {}
        hard = hard_fn(out, target) if cfg.alpha < 1 else None
        if need_teacher:
            with torch.no_grad():
                t_out = teacher(*args, **kwargs)
        if cfg.alpha > 0:
            s_logits = logits_of(out)
            parts["soft"] = kd.soft_target_loss(s_logits, logits_of(t_out), cfg.temperature,
                                                cfg.loss, _token_weight(kwargs, s_logits))
        if hard is not None:
            parts["hard"] = hard
        total = kd.mix(hard, parts.get("soft"), cfg.alpha)
        if pairs:
            feat = sum(kd.feature_loss(_project(p, fs[s], ft[t]), ft[t])
                       for p, (s, t) in zip(getattr(wrapper, "module", wrapper).projections,
                                            pairs))
            parts["feat"] = feat
            total = total + cfg.feature_weight * feat
        return {"loss": total, **parts}

    return step


def distill_recovery(teacher: nn.Module, cfg: Distillation | None = None,
                     **defaults: Any) -> Callable[..., nn.Module]:
    """A ``recover(model, data, epochs=, lr=, progress=)`` step that distils from ``teacher``.

    Interchangeable with ``mz.finetune`` wherever a recovery step is taken, e.g.
    ``iterative_prune(model, cfg, data, recover=mz.distill_recovery(original))`` where
    ``original = copy.deepcopy(model)`` was taken before compressing.
    """

    def recover(model: nn.Module, train_data: Iterable[Any], *, epochs: float, lr: float,
                **kw: Any) -> nn.Module:
        return distill(model, teacher, train_data, cfg, epochs=epochs, lr=lr,
                       **{**defaults, **kw})

    return recover
