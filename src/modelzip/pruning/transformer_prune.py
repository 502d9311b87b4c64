"""Structured pruning of Hugging Face transformers: attention heads, MLP neurons, blocks.

``mz.prune(model, mz.Heads(0.25))`` removes a quarter of every block's heads (whole KV
groups of grouped-query attention, or query heads within each group),
``mz.Neurons(0.5)`` half of every MLP's hidden neurons, and ``mz.Depth(blocks=2)`` the
blocks whose output differs least from their input (angular distance on calibration
data, Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"). The
same count is removed in every block so the standard config fields describe the result;
which heads/neurons go is decided per block by the criterion (see ``criteria.py``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import forward, take
from ..config import Config, check_choice, check_int, check_range, register
from ..errors import ConfigError, ModelzipError, UnsupportedModelError
from ..knobs import Knob
from ..select import select
from . import criteria
from .transformer_arch import (
    attention,
    block_list,
    cut_heads,
    cut_neurons,
    family,
    mlp,
    out_rows,
    remove_blocks,
    update_config,
)


def _family(model: nn.Module) -> str:
    fam = family(model)
    if fam is None:
        raise UnsupportedModelError(
            "Heads/Neurons/Depth prune Hugging Face BERT, GPT-2 and Llama-family models; "
            "use mz.Structured for other models")
    return fam


def _chosen(model: nn.Module, cfg: Config, blocks: nn.ModuleList) -> list[int]:
    """Indices of the blocks selected by targets / ignore (default: all)."""
    names = {fqn for fqn, _ in select(model, cfg, defaults=[type(blocks[0])])}
    fqn_of = {id(m): f for f, m in model.named_modules()}
    return [i for i, b in enumerate(blocks) if fqn_of[id(b)] in names]


@torch.no_grad()
def act_norms(model: nn.Module, modules: list[nn.Module], data: Any,
              max_batches: int) -> dict[int, torch.Tensor]:
    """L2 norm over calibration tokens of each input channel of ``modules`` (by id)."""
    if data is None:
        raise ModelzipError("a calibrated criterion needs calib_data")
    acc: dict[int, torch.Tensor] = {}

    def hook(m: nn.Module, args: Any) -> None:
        x = args[0].detach().float()
        sq = x.reshape(-1, x.shape[-1]).pow(2).sum(0).cpu()
        acc[id(m)] = acc.get(id(m), 0) + sq

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    was = model.training
    model.eval()
    try:
        for batch in take(data, max_batches):
            forward(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return {k: v.sqrt() for k, v in acc.items()}


def _n_keep(n: int, ratio: float) -> int:
    return max(1, n - int(round(ratio * n)))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(scores, k).indices.sort().values


def head_scores(fam: str, block: nn.Module, fn: criteria.Criterion,
                act: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per query head, per key/value head) importance of one block's attention."""
    at = attention(fam, block)
    nq, nkv = at.heads * at.head_dim, at.kv_heads * at.head_dim
    q_rows = [out_rows(m)[o: o + nq] for m, o in at.q]
    kv_rows = [out_rows(m)[o: o + nkv] for m, o in at.kv]
    q = fn(q_rows, out_rows(at.out).t(), act).reshape(at.heads, -1).sum(1)
    kv = fn(kv_rows, None, None).reshape(at.kv_heads, -1).sum(1)
    return q, kv


def plan_heads(q: torch.Tensor, kv: torch.Tensor, ratio: float, gqa: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept (query heads, kv heads). Grouped KV: whole groups, or queries per group."""
    heads, groups = q.numel(), kv.numel()
    rep = heads // groups
    if groups == heads or gqa == "groups":
        keep = _top(q.reshape(groups, rep).sum(1) + kv, _n_keep(groups, ratio))
        q_keep = (keep[:, None] * rep + torch.arange(rep)).reshape(-1)
        return q_keep, keep
    k = _n_keep(rep, ratio)
    within = [_top(q[g * rep:(g + 1) * rep], k) + g * rep for g in range(groups)]
    return torch.cat(within), torch.arange(groups)


def prune_heads(model: nn.Module, cfg: Any, calib_data: Any, chosen: list[int]) -> None:
    fam = _family(model)
    _, _, blocks = block_list(model)
    fn = criteria.criterion(cfg.criterion)
    acts: dict[int, torch.Tensor] = {}
    if cfg.criterion in criteria.CALIBRATED:
        outs = [attention(fam, blocks[i]).out for i in chosen]
        acts = act_norms(model, outs, calib_data, cfg.max_batches)
    plans = []
    for i in chosen:
        at = attention(fam, blocks[i])
        q, kv = head_scores(fam, blocks[i], fn, acts.get(id(at.out)))
        plans.append((i, *plan_heads(q, kv, cfg.ratio, getattr(cfg, "gqa", "groups"))))
    for i, q_keep, kv_keep in plans:
        cut_heads(fam, blocks[i], q_keep, kv_keep)
    update_config(model)


def prune_neurons(model: nn.Module, cfg: Any, calib_data: Any, chosen: list[int]) -> None:
    fam = _family(model)
    _, _, blocks = block_list(model)
    fn = criteria.criterion(cfg.criterion)
    acts: dict[int, torch.Tensor] = {}
    if cfg.criterion in criteria.CALIBRATED:
        acts = act_norms(model, [mlp(fam, blocks[i]).down for i in chosen], calib_data,
                         cfg.max_batches)
    plans = []
    for i in chosen:
        part = mlp(fam, blocks[i])
        score = fn([out_rows(m) for m in part.up], out_rows(part.down).t(),
                   acts.get(id(part.down)))
        plans.append((i, _top(score, _n_keep(part.size, cfg.ratio))))
    for i, keep in plans:
        cut_neurons(fam, blocks[i], keep)
    update_config(model)


@torch.no_grad()
def angular_distances(model: nn.Module, data: Any, span: int, max_batches: int
                      ) -> torch.Tensor:
    """Mean angular distance arccos(cos(x_l, x_{l+span}))/pi over calibration tokens
    between the input of block l and the input of block l+span (the last block's
    output for l+span = L); one value per l."""
    _, _, blocks = block_list(model)
    states: dict[int, torch.Tensor] = {}

    def pre(i: int) -> Any:
        def hook(m: nn.Module, args: Any, kwargs: Any) -> None:
            states[i] = args[0] if args else kwargs["hidden_states"]
        return hook

    def post(m: nn.Module, args: Any, out: Any) -> None:
        states[len(blocks)] = out[0] if isinstance(out, (tuple, list)) else out

    handles = [b.register_forward_pre_hook(pre(i), with_kwargs=True)
               for i, b in enumerate(blocks)] + [blocks[-1].register_forward_hook(post)]
    total, count = torch.zeros(len(blocks) - span + 1), 0
    was = model.training
    model.eval()
    try:
        for batch in take(data, max_batches):
            states.clear()
            forward(model, batch)
            for lo in range(len(total)):
                cos = F.cosine_similarity(states[lo].float(), states[lo + span].float(), dim=-1)
                total[lo] += (torch.arccos(cos.clamp(-1, 1)) / math.pi).mean().cpu()
            count += 1
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    if count == 0:
        raise ModelzipError("Depth pruning needs calib_data (block importance is measured)")
    return total / count


def _apply_depth(model: nn.Module, cfg: Depth, *, calib_data: Any = None, **_: Any) -> None:
    _family(model)
    _, _, blocks = block_list(model)
    chosen = set(_chosen(model, cfg, blocks))
    n = cfg.blocks if cfg.blocks is not None else int(round(cfg.ratio * len(blocks)))
    n = min(n, len(chosen), len(blocks) - 1)
    if n <= 0:
        warnings.warn("Depth: no block to remove", stacklevel=3)
        return
    if cfg.contiguous:
        d = angular_distances(model, calib_data, n, cfg.max_batches)
        ok = [lo for lo in range(len(d)) if all(i in chosen for i in range(lo, lo + n))]
        if not ok:
            raise ModelzipError(f"Depth: no run of {n} selected consecutive blocks")
        lo = min(ok, key=lambda i: float(d[i]))
        drop = list(range(lo, lo + n))
    else:
        d = angular_distances(model, calib_data, 1, cfg.max_batches)
        drop = sorted(sorted(chosen, key=lambda i: float(d[i]))[:n])
    remove_blocks(model, drop)


def prune_transformer(model: nn.Module, cfg: Any, calib_data: Any) -> None:
    """``mz.Structured`` on a known transformer: heads (when ``cfg.heads``) and MLP
    neurons of the selected blocks at ``cfg.ratio``."""
    if cfg.criterion not in criteria.names():
        raise ConfigError(f"Structured(criterion={cfg.criterion!r}) is not available for "
                          f"transformers; use one of {criteria.names()}")
    chosen = _chosen(model, cfg, block_list(model)[2])
    if cfg.heads:
        prune_heads(model, cfg, calib_data, chosen)
    prune_neurons(model, cfg, calib_data, chosen)


def _validate_common(cfg: Config) -> None:
    check_range(cfg, "ratio", 0.0, 1.0, hi_open=True)
    check_choice(cfg, "criterion", criteria.names())
    check_int(cfg, "max_batches", 1)


def _apply_heads(model: nn.Module, cfg: Heads, *, calib_data: Any = None, **_: Any) -> None:
    _family(model)
    prune_heads(model, cfg, calib_data, _chosen(model, cfg, block_list(model)[2]))


def _apply_neurons(model: nn.Module, cfg: Neurons, *, calib_data: Any = None,
                   **_: Any) -> None:
    _family(model)
    prune_neurons(model, cfg, calib_data, _chosen(model, cfg, block_list(model)[2]))


@register(_apply_heads)
@dataclass
class Heads(Config):
    """Remove ``ratio`` of every selected block's attention heads (physically).

    ``criterion``: "l1" / "l2" (weight magnitude of the head's q/k/v rows and output
    columns) or "activation" (calibrated: ||X|| x ||W_out|| of the head's channels; needs
    ``calib_data``). ``gqa``: with grouped KV heads, "groups" removes whole KV groups with
    their query heads (smaller KV cache), "queries" removes query heads within every group.
    ``targets``/``ignore`` select blocks (default: all)."""

    ratio: float = 0.25
    criterion: str = "l1"
    gqa: str = "groups"
    max_batches: int = 8

    kind = "prune"

    def validate(self) -> None:
        _validate_common(self)
        check_choice(self, "gqa", ("groups", "queries"))

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        return Knob("ratio", 0.0, max(0.9, self.ratio))


@register(_apply_neurons)
@dataclass
class Neurons(Config):
    """Remove ``ratio`` of every selected block's MLP hidden neurons (physically).

    ``criterion``: "l1" / "l2" (magnitude of the neuron's input rows and output column)
    or "activation" (||X_j|| x ||W_down[:, j]||, needs ``calib_data``)."""

    ratio: float = 0.25
    criterion: str = "l1"
    max_batches: int = 8

    kind = "prune"

    def validate(self) -> None:
        _validate_common(self)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        return Knob("ratio", 0.0, max(0.9, self.ratio))


@register(_apply_depth)
@dataclass
class Depth(Config):
    """Remove whole blocks: ``blocks`` of them, or ``ratio`` of the model's blocks.

    Needs ``calib_data``: with ``contiguous=True`` the run of blocks whose input and
    output hidden states are closest in angle is removed (Gromov et al. 2024); with
    False, the individually least important blocks. ``targets``/``ignore`` restrict
    which blocks may go."""

    blocks: int | None = None
    ratio: float | None = None
    contiguous: bool = True
    max_batches: int = 8

    kind = "prune"

    def validate(self) -> None:
        if (self.blocks is None) == (self.ratio is None):
            raise ConfigError("Depth needs exactly one of blocks= or ratio=")
        check_int(self, "blocks", 1, optional=True)
        if self.ratio is not None:
            check_range(self, "ratio", 0.0, 1.0, hi_open=True)
        check_choice(self, "contiguous", (True, False))
        check_int(self, "max_batches", 1)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """``ratio`` 0 -> 0.9, or a ladder of block counts from 1 up to ``blocks``."""
        if self.ratio is not None:
            return Knob("ratio", 0.0, max(0.9, self.ratio))
        return Knob("blocks", 1, self.blocks, tuple(range(1, self.blocks + 1)))


__all__ = ["Heads", "Neurons", "Depth", "prune_heads", "prune_neurons",
           "angular_distances", "act_norms"]
