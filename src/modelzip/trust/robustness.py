"""Accuracy under Gaussian input noise and under white-box FGSM / PGD attacks.

The attacks are the textbook L-infinity ones: FGSM (Goodfellow et al. 2015) takes one
step ``x + eps * sign(grad_x loss)``; PGD (Madry et al. 2018) starts at a random point of
the eps-ball and takes ``steps`` signed steps of size ``alpha``, projecting back into the
ball after each. Each model is attacked with its own gradient (white-box).

Integer layers (``Int8Linear`` / ``Int8Conv2d``) quantize their input with ``round`` and
run an integer matmul, which has no gradient. :func:`differentiable` adds one for the
duration of an attack with a straight-through estimator: the layer's output keeps its
exact integer-path value, and its gradient is that of the same layer computed in float
with the dequantized weights (rounding treated as the identity). Weight-only quantized
layers (``PackedLinear``, codes re-parametrisations) already compute ``x @ dequant(W)``
in autograd; for them the estimator gives the same gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import logits_of, split_batch
from ..errors import ConfigError, UnsupportedModelError
from ..state import is_registered_module

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _float_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer computed in float from its dequantized weight (the STE's surrogate)."""
    w = m.mz_weights()["weight"].to(x.dtype)
    bias = getattr(m, "bias", None)
    if w.dim() == 4:
        return F.conv2d(x, w, bias, tuple(m.stride), tuple(m.padding), tuple(m.dilation))
    return F.linear(x, w, bias)


def _ste_hook(m: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
    x = args[0] if args else None
    if (not torch.is_grad_enabled() or not isinstance(x, torch.Tensor)
            or not isinstance(out, torch.Tensor) or not x.requires_grad):
        return None
    surrogate = _float_forward(m, x)
    return out.detach() + (surrogate - surrogate.detach())


def needs_ste(m: nn.Module) -> bool:
    """A compressed module class with a float view of its weight (``mz_weights``)."""
    return is_registered_module(m) and hasattr(m, "mz_weights")


@contextmanager
def differentiable(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every compressed module class passes input gradients through a
    straight-through estimator (forward values unchanged). The output's own graph is
    dropped even where it exists: an int8 layer's output can require grad through its
    bias alone, with no path to the input. For weight-only layers the surrogate is
    exactly their own computation, so their gradient is unchanged."""
    handles = [m.register_forward_hook(_ste_hook) for m in model.modules() if needs_ste(m)]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   loss: Loss = F.cross_entropy) -> torch.Tensor:
    """d loss(model(x), y) / dx, through integer layers by the STE. Parameters' ``.grad``
    is left untouched."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), differentiable(model):
        out = logits_of(model(x))
        if not out.requires_grad:
            raise UnsupportedModelError("the model's output has no gradient with respect to "
                                        "its input, so it cannot be attacked white-box")
        (g,) = torch.autograd.grad(loss(out, y), x)
    return g


def _clamp(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(*bounds)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
         loss: Loss = F.cross_entropy, bounds: tuple[float, float] | None = None
         ) -> torch.Tensor:
    """Fast gradient sign method: ``x + eps * sign(grad_x loss)`` (clamped to ``bounds``)."""
    return _clamp(x + eps * input_gradient(model, x, y, loss).sign(), bounds).detach()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int = 10,
        alpha: float | None = None, random_start: bool = True, loss: Loss = F.cross_entropy,
        bounds: tuple[float, float] | None = None, generator: torch.Generator | None = None
        ) -> torch.Tensor:
    """Projected gradient descent in the L-infinity ball of radius ``eps`` around ``x``
    (step ``alpha``, default ``2.5 * eps / steps``; uniform random start)."""
    if steps < 1:
        raise ConfigError(f"pgd needs steps >= 1, got {steps}")
    alpha = 2.5 * eps / steps if alpha is None else alpha
    adv = x.detach().clone()
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        adv = adv + (2 * noise - 1) * eps
    adv = _clamp(adv, bounds)
    for _ in range(steps):
        adv = adv + alpha * input_gradient(model, adv, y, loss).sign()
        adv = _clamp(torch.max(torch.min(adv, x + eps), x - eps), bounds).detach()
    return adv


@torch.no_grad()
def _right(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits_of(model(x)).argmax(-1) == y).sum())


def labelled_tensors(data: Iterable[Any], samples: int | None, device: Any = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float input, integer labels) batches, at most ``samples`` examples in all."""
    seen = 0
    for batch in data:
        args, kwargs, y = split_batch(batch)
        if kwargs or not args or not isinstance(args[0], torch.Tensor) \
                or not args[0].dtype.is_floating_point or y is None:
            raise UnsupportedModelError("robustness needs (float input, label) batches")
        x, y = args[0], y
        if samples is not None:
            x, y = x[: samples - seen], y[: samples - seen]
        if x.shape[0] == 0:
            return
        seen += x.shape[0]
        yield x.to(device), y.to(device)


def robustness(model: nn.Module, data: Iterable[Any], *, sigmas: Iterable[float] = (0.1, 0.3),
               eps: Iterable[float] = (0.01, 0.03), pgd_steps: int = 10,
               samples: int | None = 1000, bounds: tuple[float, float] | None = None,
               device: Any = None, seed: int = 0) -> dict[str, Any]:
    """Accuracy of ``model`` clean, under Gaussian noise of each std in ``sigmas``, and
    under FGSM and PGD at each ``eps`` (input units), on the first ``samples`` examples.
    ``pgd_steps=0`` skips PGD."""
    sigmas, eps = [float(s) for s in sigmas], [float(e) for e in eps]
    gen = torch.Generator().manual_seed(seed)
    n = clean = 0
    noise = [0] * len(sigmas)
    fg, pg = [0] * len(eps), [0] * len(eps)
    was = model.training
    model.eval()
    try:
        for x, y in labelled_tensors(data, samples, device):
            n += y.numel()
            clean += _right(model, x, y)
            for i, s in enumerate(sigmas):
                z = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
                noise[i] += _right(model, _clamp(x + s * z, bounds), y)
            for i, e in enumerate(eps):
                fg[i] += _right(model, fgsm(model, x, y, e, bounds=bounds), y)
                if pgd_steps:
                    adv = pgd(model, x, y, e, steps=pgd_steps, bounds=bounds, generator=gen)
                    pg[i] += _right(model, adv, y)
    finally:
        model.train(was)
    if n == 0:
        raise ConfigError("robustness() got no examples")
    out: dict[str, Any] = {
        "examples": n, "clean": clean / n,
        "noise": [{"sigma": s, "accuracy": c / n} for s, c in zip(sigmas, noise)],
        "fgsm": [{"eps": e, "accuracy": c / n} for e, c in zip(eps, fg)]}
    if pgd_steps:
        out["pgd"] = [{"eps": e, "accuracy": c / n, "steps": pgd_steps} for e, c in zip(eps, pg)]
    return out
