"""Recipe steps as configs: ``finetune``, ``distill``, ``evaluate`` and ``convert``.

Steps are registered like every method (config + handler), so a recipe is a plain list
of configs and the loop never dispatches on names. A step's handler gets the run's
context as keyword arguments (``train_data``, ``teacher``, ``progress``, ``device``);
a transform that follows a step sees the model the step left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..config import Config, check_choice, check_range, register
from ..distill import Distillation, distill
from ..errors import ConfigError
from ..knobs import Knob
from ..ops.kd import LOSSES
from ..quantization import convert
from ..train import finetune

MAX_EPOCHS = 10_000.0


class StepConfig(Config):
    """Base of the steps: they select no layers and have no strength knob."""

    kind: ClassVar[str] = "step"
    default_targets: ClassVar[tuple[str, ...]] = ()

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        return None

    def check_training(self) -> None:
        if self.targets or self.ignore:
            raise ConfigError(f"step '{self.config_name()}' selects no layers: "
                              "drop targets/ignore")
        check_range(self, "epochs", 0.0, MAX_EPOCHS, lo_open=True)
        check_range(self, "lr", 0.0, 10.0, lo_open=True)
        check_range(self, "weight_decay", 0.0, 10.0)
        if not math.isfinite(self.epochs * self.lr):
            raise ConfigError(f"step '{self.config_name()}': epochs and lr must be finite")


def _need(train_data: Any, what: str) -> None:
    if train_data is None:
        raise ConfigError(f"the recipe's '{what}' step needs train_data")


def _finetune(model: nn.Module, cfg: Finetune, *, train_data: Any = None,
              progress: bool = True, label: str = "", device: Any = None, **_: Any) -> None:
    _need(train_data, "finetune")
    finetune(model, train_data, epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
             progress=progress, desc=f"{label}: fine-tune" if label else "fine-tune",
             device=device)


@register(_finetune)
@dataclass
class Finetune(StepConfig):
    """Train the compressed model (masks and codes stay fixed) for ``epochs`` at ``lr``."""

    epochs: float
    lr: float
    weight_decay: float = 0.0

    name: ClassVar[str] = "finetune"

    def validate(self) -> None:
        self.check_training()


def _distill(model: nn.Module, cfg: Distill, *, train_data: Any = None,
             teacher: nn.Module | None = None, progress: bool = True, device: Any = None,
             **_: Any) -> None:
    _need(train_data, "distill")
    if teacher is None:
        raise ConfigError("the recipe's 'distill' step needs a teacher")
    kd = Distillation(temperature=cfg.temperature, alpha=cfg.alpha, loss=cfg.loss)
    distill(model, teacher, train_data, kd, epochs=cfg.epochs, lr=cfg.lr,
            weight_decay=cfg.weight_decay, progress=progress, device=device)


@register(_distill)
@dataclass
class Distill(StepConfig):
    """Recover by distilling from the teacher (the uncompressed model by default)."""

    epochs: float
    lr: float
    temperature: float = Distillation.temperature
    alpha: float = Distillation.alpha
    loss: str = "kl"
    weight_decay: float = 0.0

    name: ClassVar[str] = "distill"

    def validate(self) -> None:
        self.check_training()
        check_range(self, "temperature", 0.0, 1e3, lo_open=True)
        check_range(self, "alpha", 0.0, 1.0)
        check_choice(self, "loss", LOSSES)


def _nothing(model: nn.Module, cfg: Config, **_: Any) -> None:
    """Evaluation happens after every unit anyway; the step only marks a unit's end."""


@register(_nothing)
@dataclass
class Evaluate(StepConfig):
    """Evaluate here (ends a unit, so the requirement is checked at this point)."""

    name: ClassVar[str] = "evaluate"


def _convert(model: nn.Module, cfg: Config, **_: Any) -> None:
    convert(model)


@register(_convert)
@dataclass
class Convert(StepConfig):
    """Turn QAT fake-quantized layers into real integer layers."""

    name: ClassVar[str] = "convert"


STEPS = (Finetune, Distill, Evaluate, Convert)
