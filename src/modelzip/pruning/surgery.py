"""Slicing modules for structured pruning: every tensor along the kept channels."""

from __future__ import annotations

import torch
from torch import nn

from .rules import Attention
from .spaces import Graph, Layout

_TENSORS = ("weight", "bias", "weight_mask", "bias_mask", "running_mean", "running_var")


def _slice(module: nn.Module, dim: int, idx: torch.Tensor, names: tuple[str, ...] = _TENSORS,
           size: int | None = None) -> None:
    """Keep entries ``idx`` along ``dim`` of the module's tensors of length ``size``."""
    for name in names:
        for store in (module._parameters, module._buffers):
            t = store.get(name)
            if t is None or t.dim() <= dim or (size is not None and t.shape[dim] != size):
                continue
            new = t.detach().index_select(dim, idx).clone()
            store[name] = nn.Parameter(new, t.requires_grad) if store is module._parameters \
                else new


def layout_index(g: Graph, layout: Layout, keep: dict[int, torch.Tensor]) -> torch.Tensor:
    """Feature indices kept along ``layout`` (channels of pruned spaces, x their expand)."""
    parts, offset = [], 0
    for sid, expand in layout:
        n = g.size[sid]
        chans = keep.get(g.find(sid))
        chans = torch.arange(n) if chans is None else chans
        parts.append((offset + chans[:, None] * expand + torch.arange(expand)).reshape(-1))
        offset += n * expand
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def _touched(g: Graph, layout: Layout, keep: dict[int, torch.Tensor]) -> bool:
    return any(g.find(s) in keep for s, _ in layout)


def slice_space(model: nn.Module, g: Graph, keep: dict[int, torch.Tensor]) -> None:
    """Apply the kept channels of every pruned space to producers and consumers."""
    for fqn, sid in g.outs.items():
        idx = keep.get(g.find(sid))
        if idx is None:
            continue
        m = model.get_submodule(fqn)
        _slice(m, 0, idx, size=g.size[sid])
        _set_size(m, out=idx.numel())
    for fqn, layouts in g.ins.items():
        if not _touched(g, layouts[0], keep):
            continue
        m = model.get_submodule(fqn)
        idx = layout_index(g, layouts[0], keep)
        _slice(m, 1, idx, ("weight", "weight_mask"), size=g.width(layouts[0]))
        _set_size(m, inp=idx.numel())
    for table, depthwise in ((g.norms, False), (g.depthwise, True)):
        for fqn, layouts in table.items():
            if not _touched(g, layouts[0], keep):
                continue
            m = model.get_submodule(fqn)
            idx = layout_index(g, layouts[0], keep)
            _slice(m, 0, idx, size=g.width(layouts[0]))
            _set_size(m, out=idx.numel(), inp=idx.numel() if depthwise else None)


def _set_size(m: nn.Module, out: int | None = None, inp: int | None = None) -> None:
    if isinstance(m, nn.Linear):
        m.out_features = out if out is not None else m.out_features
        m.in_features = inp if inp is not None else m.in_features
    elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
        depthwise = m.groups > 1 and m.groups == m.in_channels
        m.out_channels = out if out is not None else m.out_channels
        m.in_channels = inp if inp is not None else m.in_channels
        if depthwise:
            m.groups = m.in_channels
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.num_features = out
    elif isinstance(m, nn.LayerNorm):
        m.normalized_shape = (out,)


def slice_heads(att: nn.Module, rule: Attention, heads: torch.Tensor) -> None:
    """Keep attention ``heads`` (indices): q/k/v output rows and out-projection columns."""
    q, k, v, out = rule.projections(att)
    hd = getattr(att, rule.head_dim)
    rows = (heads[:, None] * hd + torch.arange(hd)).reshape(-1)
    for lin in (q, k, v):
        _slice(lin, 0, rows, size=lin.out_features)
        lin.out_features = rows.numel()
    _slice(out, 1, rows, ("weight", "weight_mask"), size=out.in_features)
    out.in_features = rows.numel()
    setattr(att, rule.n_head, int(heads.numel()))
