"""Training and evaluation helpers shared by every method (with progress bars)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .batches import forward, logits_of, take, to_device
from .config import ConfigError
from .devices import module_device, placed
from .distributed import ddp
from .errors import ModelzipError
from .progress import bar as progress_bar
from .state import enforce_masks, mask_gradients

LossFn = Callable[[Any, Any], torch.Tensor]
StepLoss = torch.Tensor | dict[str, torch.Tensor]


def task_loss(output: Any, target: Any) -> torch.Tensor:
    """Cross-entropy for classifiers and per-token LMs; a model's own loss if it has one."""
    if target is None and getattr(output, "loss", None) is not None:
        return output.loss
    logits = logits_of(output)
    if target is None:
        raise ModelzipError("batches carry no target: pass loss= or labelled data")
    if logits.dim() == 3:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    if target.dtype.is_floating_point:
        return F.mse_loss(logits, target)
    return F.cross_entropy(logits, target)


def check_schedule(epochs: Any, lr: Any) -> None:
    """Raise ConfigError unless ``epochs`` and ``lr`` are positive numbers."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0:
        raise ConfigError(f"epochs must be positive, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}")


def fit(model: nn.Module, data: Iterable[Any], *, epochs: float, lr: float,
        step_loss: Callable[[nn.Module, Any], StepLoss], weight_decay: float = 0.0,
        schedule: str = "cosine", progress: bool = True, desc: str = "train",
        on_epoch: Callable[[int], bool | None] | None = None,
        evaluate: Callable[[nn.Module], float] | None = None,
        patience: int = 2, device: Any = None) -> nn.Module:
    """The one training loop: Adam(W), optional cosine decay, masks kept fixed.

    ``step_loss(model, batch)`` returns the loss of one batch, or a dict of named
    losses whose ``"loss"`` entry is optimised (the bar shows each one's running mean
    over the epoch). ``epochs`` may be fractional (a share of the last epoch).
    ``on_epoch(i)`` returning True stops early. ``evaluate(model)`` (higher is better,
    e.g. validation accuracy) runs after each epoch: training stops after ``patience``
    epochs without improvement and the best weights seen are restored.
    ``device`` ("cpu", "cuda", "auto"): the model moves there for the run and back to
    where it was afterwards; batches follow it.
    Under torchrun it trains data-parallel (see :mod:`modelzip.distributed.ddp`): the
    model is wrapped in DDP, each rank takes its share of every batch, and the result
    equals one process with the same global batch.
    """
    check_schedule(epochs, lr)
    with placed(device, model) as dev:
        n_batches = len(data) if hasattr(data, "__len__") else None
        total = math.ceil(epochs * n_batches) if n_batches else None
        opt, sched = _optimiser(model, lr, weight_decay, schedule, total)
        dp = ddp.init_from_env(dev)  # torchrun: DDP, each rank a weighted share of a batch
        net, data = (ddp.wrap(model), ddp.Sharded(data)) if dp else (model, data)
        stopper = _EarlyStop(model, ddp.agreed(evaluate), patience) \
            if evaluate is not None else None
        bar = progress_bar(total=total, desc=desc, progress=progress and ddp.is_main(),
                           unit="batch")
        model.train()
        try:
            step = 0
            for epoch in range(math.ceil(epochs)):
                step = _epoch(net, model, data, step_loss, opt, sched, bar, (step, total),
                              epoch, dp, dev)
                stop = stopper is not None and stopper(epoch, bar)
                if (on_epoch is not None and on_epoch(epoch)) or stop:
                    break
        finally:
            bar.close()
            if stopper is not None:
                stopper.restore()
            model.eval()
    return model


def _epoch(net: nn.Module, model: nn.Module, data: Iterable[Any],
           step_loss: Callable[[nn.Module, Any], StepLoss], opt: torch.optim.Optimizer,
           sched: Any, bar: Any, steps: tuple[int, int | None], epoch: int, dp: bool,
           dev: torch.device | None) -> int:
    """One pass over ``data``; ``steps`` = (steps so far, the run's total or None): stops
    at the total. Returns the steps taken so far."""
    step, total = steps
    running: dict[str, float] = {}
    for n, batch in enumerate(data):
        if total is not None and step >= total:
            break
        batch, weight = batch if dp else (batch, 1.0)
        loss = _named(step_loss(net, to_device(batch, dev)), running, n) * weight
        opt.zero_grad(set_to_none=True)
        loss.backward()
        mask_gradients(model)
        opt.step()
        # under a caller's torch.autocast the cast copies of the weights are cached until
        # the context exits: without this, every step would compute with step 0's weights
        torch.clear_autocast_cache()
        enforce_masks(model)
        if sched:
            sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, epoch=epoch + 1)
    return step


def _optimiser(model: nn.Module, lr: float, weight_decay: float, schedule: str,
               total: int | None) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters, cosine-decayed over ``total`` steps."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ModelzipError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
             if schedule == "cosine" and total else None)
    return opt, sched


def _named(out: StepLoss, running: dict[str, float], n: int) -> torch.Tensor:
    """The loss to optimise; updates the epoch's running means of every named loss."""
    if isinstance(out, dict):
        if "loss" not in out:
            raise ModelzipError("step_loss returned a dict without a 'loss' entry")
        loss, parts = out["loss"], out
    else:
        loss, parts = out, {"loss": out}
    for k, v in parts.items():
        value = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
        running[k] = running.get(k, 0.0) + (value - running.get(k, 0.0)) / (n + 1)
    return loss


class _EarlyStop:
    """Tracks a validation metric (higher is better), keeps the best weights."""

    def __init__(self, model: nn.Module, evaluate: Callable[[nn.Module], float],
                 patience: int):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"patience must be a positive integer, got {patience!r}")
        self.model, self.evaluate, self.patience = model, evaluate, patience
        self.best = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad = 0
        self.history: list[float] = []

    def __call__(self, epoch: int, bar: Any) -> bool:
        metric = float(self.evaluate(self.model))
        self.model.train()
        self.history.append(metric)
        if not bar.disable:
            bar.write(f"epoch {epoch + 1}: validation {metric:.4f}")
        if metric > self.best:
            self.best, self.bad = metric, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self) -> None:
        if self.best_state is not None and self.bad:
            self.model.load_state_dict(self.best_state)


def train(model: nn.Module, data: Iterable[Any], *, epochs: float, lr: float,
          loss: LossFn | None = None, weight_decay: float = 0.0, schedule: str = "cosine",
          progress: bool = True, evaluate: Callable[[nn.Module], float] | None = None,
          patience: int = 2, desc: str = "train", device: Any = None) -> nn.Module:
    """Train ``model`` in place on ``data`` (cross-entropy unless ``loss`` is given).

    With ``evaluate`` (higher is better), stops early and keeps the best weights (see fit).
    ``device``: where to train (the model returns to where it was afterwards).
    """
    loss_fn = loss or task_loss

    def step_loss(m: nn.Module, batch: Any) -> torch.Tensor:
        out, target = forward(m, batch)
        return loss_fn(out, target)

    return fit(model, data, epochs=epochs, lr=lr, step_loss=step_loss,
               weight_decay=weight_decay, schedule=schedule, progress=progress,
               evaluate=evaluate, patience=patience, desc=desc, device=device)


def finetune(model: nn.Module, train_data: Iterable[Any], *, epochs: float, lr: float,
             loss: LossFn | None = None, progress: bool = True, **kw: Any) -> nn.Module:
    """Recover accuracy after compression: training that keeps masks, codes fixed.

    Pruned weights stay zero; integer codes stay fixed; codebooks (cluster centroids)
    are trained with the summed gradients of their weights.
    """
    return train(model, train_data, epochs=epochs, lr=lr, loss=loss, progress=progress, **kw)


@torch.no_grad()
def accuracy(model: nn.Module, data: Iterable[Any], *, progress: bool = False,
             device: Any = None) -> float:
    """Top-1 accuracy in [0, 1] over ``data`` (batches follow the model to its device;
    ``device`` moves the model there for the evaluation and back)."""
    model.eval()
    right = total = 0
    with placed(device, model):
        dev = module_device(model)
        for batch in progress_bar(data, desc="eval", progress=progress):
            out, target = forward(model, batch, dev)
            pred = logits_of(out).argmax(-1)
            right += (pred == target).sum().item()
            total += target.numel()
    if total == 0:
        raise ModelzipError("accuracy() got no labelled examples")
    return right / total


@torch.no_grad()
def perplexity(model: nn.Module, data: Iterable[Any], *, progress: bool = False,
               max_batches: int | None = None, device: Any = None) -> float:
    """exp(mean next-token cross-entropy) over ``data`` (token-weighted; devices as for
    :func:`accuracy`)."""
    model.eval()
    nll = 0.0
    count = 0
    with placed(device, model):
        dev = module_device(model)
        for batch in take(progress_bar(data, desc="ppl", progress=progress), max_batches):
            out, target = forward(model, batch, dev)
            logits = logits_of(out)
            nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   reduction="sum").item()
            count += target.numel()
    if count == 0:
        raise ModelzipError("perplexity() got no tokens")
    return math.exp(nll / count)
