"""Calibration: statistics of the inputs of Linear layers, gathered block by block.

``sequential(model, data, fn)`` walks the model's transformer blocks (or the whole model
when it has none) in order; for each block it runs the calibration data through the model
*as compressed so far*, records per-layer input statistics, then lets ``fn`` compress the
block's layers. Later blocks therefore see the errors of earlier ones, as in GPTQ and
SparseGPT's sequential mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import forward, take
from .errors import ModelzipError
from .ops.hessian import add_batch


@dataclass
class InputStats:
    """Running statistics of one layer's inputs (last dim = in_features)."""

    d: int
    want_hessian: bool = True
    hessian: torch.Tensor | None = None
    count: int = 0
    abs_sum: torch.Tensor = field(default=None)  # type: ignore[assignment]
    sq_sum: torch.Tensor = field(default=None)  # type: ignore[assignment]
    abs_max: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.want_hessian:
            self.hessian = torch.zeros(self.d, self.d, dtype=torch.float64)
        self.abs_sum = torch.zeros(self.d, dtype=torch.float64)
        self.sq_sum = torch.zeros(self.d, dtype=torch.float64)
        self.abs_max = torch.zeros(self.d)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        if self.hessian is not None:
            self.hessian, _ = add_batch(self.hessian, self.count, x)
        self.count += x.shape[0]
        self.abs_sum += x.abs().sum(0).double()
        self.sq_sum += (x.double() ** 2).sum(0)
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean |x| per input channel (AWQ's activation salience)."""
        return (self.abs_sum / max(self.count, 1)).float()

    @property
    def l2_norm(self) -> torch.Tensor:
        """||X_j||_2 per input channel (Wanda's input norm)."""
        return self.sq_sum.sqrt().float()


def collect(model: nn.Module, layers: dict[str, nn.Linear], data: Iterable[Any], *,
            max_batches: int | None = None, hessian: bool = True) -> dict[str, InputStats]:
    """Run ``data`` through ``model`` and gather input statistics of ``layers``."""
    stats = {name: InputStats(_in_features(m), hessian) for name, m in layers.items()}
    handles = [m.register_forward_pre_hook(_recorder(stats[name]))
               for name, m in layers.items()]
    try:
        with torch.no_grad():
            n = 0
            for batch in take(data, max_batches):
                forward(model, batch)
                n += 1
        if n == 0:
            raise ModelzipError("calibration data yielded no batch")
    finally:
        for h in handles:
            h.remove()
    return stats


def _in_features(m: nn.Module) -> int:
    if hasattr(m, "in_features"):
        return int(m.in_features)
    if type(m).__name__ == "Conv1D":  # Hugging Face GPT-2: y = x @ W + b, W is (in, out)
        return int(m.weight.shape[0])
    raise ModelzipError(f"calibration supports Linear-like layers, not {type(m).__name__}")


def _recorder(st: InputStats) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple) -> None:
        st.add(args[0])

    return hook


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks of a transformer (the longest ModuleList holding Linears),
    or the whole model as a single block."""
    best: list[tuple[str, nn.Module]] = []
    for fqn, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > len(best):
            kids = [(f"{fqn}.{i}", c) for i, c in enumerate(m)]
            if all(any(isinstance(x, nn.Linear) for x in c.modules()) for _, c in kids):
                best = kids
    return best or [("", model)]


def sequential(model: nn.Module, data: Iterable[Any],
               fn: Callable[[dict[str, nn.Module], dict[str, InputStats]], None], *,
               layers: Callable[[nn.Module], list[tuple[str, nn.Module]]],
               max_batches: int | None = None, hessian: bool = True) -> None:
    """Compress block by block: gather stats for each block's ``layers``, then ``fn``.

    ``layers(model)`` lists the (fqn, Linear) pairs to compress (already filtered by the
    config's targets/ignore); layers outside any block are handled as a final block.
    """
    if data is None:
        raise ModelzipError("this method needs calib_data (an iterable of batches)")
    data = list(take(data, max_batches))
    chosen = dict(layers(model))
    done: set[str] = set()
    for prefix, _ in find_blocks(model) + [("", model)]:
        group = {k: m for k, m in chosen.items() if k not in done and (
            not prefix or k == prefix or k.startswith(prefix + "."))}
        if not group:
            continue
        stats = collect(model, group, data, hessian=hessian)
        fn(group, stats)
        done.update(group)
