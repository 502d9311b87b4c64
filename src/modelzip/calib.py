"""Calibration statistics of the inputs of Linear layers, and the blocks of a model.

:class:`InputStats` keeps sums (float32 ``X^T X``, float64 per-channel |x| and x^2, the
max |x| and the row count) so that statistics gathered from different mini-batches, or on
different ranks of a ``torch.distributed`` job, add up exactly: :meth:`InputStats.all_reduce`
sums them across ranks before a solver reads them. The block-by-block engine that feeds
them is :mod:`modelzip.blockwise`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .batches import forward, take
from .errors import ModelzipError


def world() -> tuple[int, int]:
    """(rank, world size) of the initialised torch.distributed job, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class InputStats:
    """Running sums over one layer's inputs (last dim = ``d`` = in_features).

    Tensors are allocated on the device of the first input seen; the Hessian is kept as
    the float32 sum ``X^T X`` and scaled to ``2/n X^T X`` on read.
    """

    def __init__(self, d: int, want_hessian: bool = True):
        self.d, self.want_hessian, self.count = d, want_hessian, 0
        self._scaled = False
        self.xtx: torch.Tensor | None = None
        self.abs_sum: torch.Tensor | None = None
        self.sq_sum: torch.Tensor | None = None
        self.abs_max: torch.Tensor | None = None

    def _alloc(self, device: torch.device) -> None:
        if self.abs_sum is not None:
            return
        if self.want_hessian:
            self.xtx = torch.zeros(self.d, self.d, device=device)
        self.abs_sum = torch.zeros(self.d, dtype=torch.float64, device=device)
        self.sq_sum = torch.zeros(self.d, dtype=torch.float64, device=device)
        self.abs_max = torch.zeros(self.d, device=device)

    def add(self, x: torch.Tensor) -> None:
        """Fold a batch of inputs ``x`` (..., d) into the sums."""
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self._alloc(x.device)
        if self.xtx is not None:
            self.xtx.addmm_(x.T, x)
        self.count += x.shape[0]
        a = x.abs()
        self.abs_sum += a.sum(0, dtype=torch.float64)
        torch.maximum(self.abs_max, a.amax(0), out=self.abs_max)
        self.sq_sum += a.mul_(a).sum(0, dtype=torch.float64)

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum (max for ``abs_max``) the statistics over the ranks of torch.distributed.

        A no-op outside a distributed job; every rank must call it for the same layers.
        """
        if world()[1] == 1:
            return
        dist = torch.distributed
        self._alloc(torch.device(device) if self.abs_sum is None else self.abs_sum.device)
        n = torch.tensor([float(self.count)], dtype=torch.float64, device=self.abs_sum.device)
        for t in (self.xtx, self.abs_sum, self.sq_sum, n):
            if t is not None:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)
        dist.all_reduce(self.abs_max, op=dist.ReduceOp.MAX)
        self.count = int(n.item())

    def finish(self) -> None:
        """Scale the sum in place into H (saves a d x d copy); :attr:`hessian` then
        returns it as is. Called once the statistics are complete."""
        if self.xtx is not None and not self._scaled:
            self.xtx.mul_(2.0 / max(self.count, 1))
            self._scaled = True

    @property
    def hessian(self) -> torch.Tensor | None:
        """H = 2/n X^T X (float32), or None when not gathered."""
        if self.xtx is None:
            return torch.zeros(self.d, self.d) if self.want_hessian else None
        if self._scaled:
            return self.xtx
        return self.xtx * (2.0 / max(self.count, 1))

    @property
    def abs_mean(self) -> torch.Tensor:
        """Mean |x| per input channel (AWQ's activation salience)."""
        if self.abs_sum is None:
            return torch.zeros(self.d)
        return (self.abs_sum / max(self.count, 1)).float()

    @property
    def l2_norm(self) -> torch.Tensor:
        """||X_j||_2 per input channel (Wanda's input norm)."""
        return torch.zeros(self.d) if self.sq_sum is None else self.sq_sum.sqrt().float()


def in_features(m: nn.Module) -> int:
    """Input width of a Linear-like layer (Hugging Face GPT-2 Conv1D stores (in, out))."""
    if hasattr(m, "in_features"):
        return int(m.in_features)
    if type(m).__name__ == "Conv1D":
        return int(m.weight.shape[0])
    raise ModelzipError(f"calibration supports Linear-like layers, not {type(m).__name__}")


def collect(model: nn.Module, layers: dict[str, nn.Linear], data: Iterable[Any], *,
            max_batches: int | None = None, hessian: bool = True) -> dict[str, InputStats]:
    """Run ``data`` through the whole ``model`` and gather input statistics of ``layers``."""
    stats = {name: InputStats(in_features(m), hessian) for name, m in layers.items()}
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


def _recorder(st: InputStats) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple) -> None:
        st.add(args[0])

    return hook


def _linear_like(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks of a transformer (the longest ModuleList whose entries all hold
    Linear / Conv1D layers: HF Llama ``model.layers``, GPT-2 ``transformer.h``, BERT
    ``encoder.layer``, tiny_gpt ``blocks``), or the whole model as a single block."""
    best: list[tuple[str, nn.Module]] = []
    for fqn, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > len(best):
            kids = [(f"{fqn}.{i}" if fqn else str(i), c) for i, c in enumerate(m)]
            if all(any(_linear_like(x) for x in c.modules()) for _, c in kids):
                best = kids
    return best or [("", model)]
