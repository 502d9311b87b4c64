"""Structured pruning that physically shrinks the model: neurons, channels, heads.

``mz.prune(model, mz.Structured(0.5), example_inputs=x)`` traces the model (see
``graph.py``), groups channels that must go together (a layer's outputs, every consumer's
inputs, BatchNorm/LayerNorm, depthwise convs, residual additions, concatenations,
flatten-into-Linear), ranks each group's channels by the producing layers' filters
(L1, L2 or first-order Taylor |sum w*dL/dw|^2) and slices every tensor involved. Attention
modules with q/k/v/out projections lose whole heads. The result is a plain, smaller
``nn.Module``: no masks, nothing to export specially. Hugging Face BERT / GPT-2 / Llama
models are pruned per block instead (heads and MLP neurons at ``ratio``, see
``transformer_prune.py``), so that their config still describes them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..batches import first_input, forward, take
from ..config import Config, check_choice, check_int, check_range, register
from ..errors import ModelzipError
from ..knobs import Knob
from ..select import weight_layers
from ..train import task_loss
from .graph import analyse
from .rules import Rules
from .spaces import Graph, Layout
from .surgery import slice_heads, slice_space
from .transformer_arch import family
from .transformer_prune import prune_transformer

Scores = dict[str, torch.Tensor]  # module fqn -> per-output-channel importance


def _resolve(g: Graph, selected: set[str], cfg: Structured) -> dict[int, list[str]]:
    """Prunable space roots -> producing layers; raises or warns on unfollowable channels."""
    for layouts in list(g.ins.values()) + list(g.norms.values()) + list(
            g.depthwise.values()):
        for lay in layouts[1:]:  # a module called more than once: one layout for all calls
            g.join(layouts[0], lay)
    for fqn in g.pinned_modules:  # weights used directly by code: their inputs stay
        for lay in g.ins.get(fqn, []):
            g.pin(lay)
    producers: dict[int, list[str]] = {}
    for fqn, sid in g.outs.items():
        producers.setdefault(g.find(sid), []).append(fqn)
    pins = g.root_pins()
    for what, layouts in g.unknown:
        roots = {g.find(s) for lay in layouts for s, _ in lay}
        bad = [r for r in roots if r not in pins and _eligible(producers.get(r), selected, g)]
        if bad and cfg.on_unsupported == "error":
            layers = sorted({p for r in bad for p in producers[r]})
            raise ModelzipError(
                f"Structured: cannot follow the channels of layer(s) {layers} through {what}; "
                "pass on_unsupported='skip' to keep those channels and prune the rest")
        for r in bad:
            warnings.warn(f"Structured: keeping the outputs of {producers[r]}: they flow "
                          f"into {what}, which the analysis cannot follow", stacklevel=4)
            pins[r] = what
    return {r: p for r, p in producers.items()
            if r not in pins and _eligible(p, selected, g) and g.size[r] > 1}


def _eligible(producers: list[str] | None, selected: set[str], g: Graph) -> bool:
    return bool(producers) and all(p in selected and p not in g.pinned_modules
                                   for p in producers)


def _channel_scores(w: torch.Tensor, b: torch.Tensor | None, criterion: str,
                    grads: Scores | None, fqn: str) -> torch.Tensor:
    if criterion == "taylor":
        return grads[fqn]
    flat = w.detach().reshape(w.shape[0], -1).float()
    if criterion == "l1":
        return flat.abs().sum(1)
    return flat.pow(2).sum(1).sqrt()


def _taylor(model: nn.Module, data: Any, layers: dict[str, nn.Module],
            max_batches: int) -> Scores:
    """Molchanov et al. 2019: per output channel (sum of w * dL/dw over its filter)^2,
    accumulated over calibration batches (which must carry labels)."""
    if data is None:
        raise ModelzipError("Structured(criterion='taylor') needs calib_data with labels")
    acc = {f: torch.zeros(m.weight.shape[0]) for f, m in layers.items()}
    was = model.training
    model.eval()
    try:
        for batch in take(data, max_batches):
            model.zero_grad(set_to_none=True)
            out, target = forward(model, batch)
            task_loss(out, target).backward()
            for f, m in layers.items():
                if m.weight.grad is None:
                    continue
                s = (m.weight.grad * m.weight).detach().reshape(m.weight.shape[0], -1).sum(1)
                if getattr(m, "bias", None) is not None and m.bias.grad is not None:
                    s = s + (m.bias.grad * m.bias).detach()
                acc[f] += s.float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was)
    return acc


def _keep(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    n = scores.numel()
    k = max(1, n - int(round(ratio * n)))
    return torch.topk(scores, k).indices.sort().values


def _head_scores(att: nn.Module, rule: Any, criterion: str, grads: Scores | None,
                 fqn: str) -> torch.Tensor:
    q, k, v, out = rule.projections(att)
    n_head, hd = getattr(att, rule.n_head), getattr(att, rule.head_dim)
    total = torch.zeros(n_head)
    names = (rule.q, rule.k, rule.v)
    for name, lin in zip(names, (q, k, v)):
        rows = _channel_scores(lin.weight, lin.bias, criterion, grads, f"{fqn}.{name}")
        total += rows.reshape(n_head, hd).sum(1)
    if criterion != "taylor":
        cols = _channel_scores(out.weight.t(), None, criterion, None, "")
        total += cols.reshape(n_head, hd).sum(1)
    return total


def _apply_structured(model: nn.Module, cfg: Structured, *, calib_data: Any = None,
                      example_inputs: Any = None, **_: Any) -> None:
    if family(model) is not None:  # Hugging Face transformer: heads and MLP neurons
        prune_transformer(model, cfg, calib_data)
        return
    if example_inputs is None:
        if calib_data is None:
            raise ModelzipError("Structured pruning traces the model: pass example_inputs= "
                                "(or calib_data)")
        example_inputs = first_input(calib_data)
    rules = Rules()
    layers = dict(weight_layers(model, cfg))
    g = analyse(model, example_inputs, rules)
    spaces = _resolve(g, set(layers), cfg)
    grads = (_taylor(model, calib_data, layers, cfg.max_batches)
             if cfg.criterion == "taylor" else None)
    plan_heads = []
    for fqn in (g.heads if cfg.heads else []):
        att = model.get_submodule(fqn)
        rule = rules.attention(att)
        parts = [f"{fqn}.{n}" for n in (rule.q, rule.k, rule.v, rule.out)]
        if getattr(att, rule.n_head) > 1 and all(
                p in layers and p not in g.pinned_modules for p in parts):
            plan_heads.append((att, rule, _keep(_head_scores(att, rule, cfg.criterion, grads,
                                                             fqn), cfg.ratio)))
    plan_spaces = []
    for root, producers in spaces.items():
        score = sum(_channel_scores(layers[p].weight, getattr(layers[p], "bias", None),
                                    cfg.criterion, grads, p) for p in producers)
        plan_spaces.append((root, _keep(score, cfg.ratio)))
    keep = {root: idx for root, idx in plan_spaces}
    if layers and not keep and not plan_heads:
        warnings.warn("Structured: nothing could be pruned: the outputs of every selected "
                      "layer reach the model's outputs, a fixed tensor, or code that could "
                      "not be traced", stacklevel=3)
    for att, rule, idx in plan_heads:
        slice_heads(att, rule, idx)
    if keep:
        slice_space(model, g, keep)


@register(_apply_structured)
@dataclass
class Structured(Config):
    """Remove whole neurons, channels and attention heads (a physically smaller model).

    ``ratio``: fraction of the channels of every prunable group (and of the heads of every
    attention module) removed; at least one is always kept. ``criterion``: "l1" / "l2"
    filter norms or "taylor" (needs labelled ``calib_data``; ``max_batches`` of it).
    ``heads``: also prune attention heads. ``on_unsupported``: "error" raises a
    ModelzipError naming the layer whose channels reach an op the analysis cannot follow;
    "skip" keeps those channels with a warning and prunes the rest. ``targets`` choose the
    layers whose *outputs* may be removed (their consumers shrink to match).
    """

    ratio: float = 0.5
    criterion: str = "l1"
    heads: bool = True
    on_unsupported: str = "error"
    max_batches: int = 8

    kind = "prune"

    def validate(self) -> None:
        check_range(self, "ratio", 0.0, 1.0, hi_open=True)
        check_choice(self, "criterion", ("l1", "l2", "taylor"))
        check_choice(self, "on_unsupported", ("error", "skip"))
        check_choice(self, "heads", (True, False))
        check_int(self, "max_batches", 1)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        return Knob("ratio", 0.0, max(0.9, self.ratio))


__all__ = ["Structured", "Layout"]
