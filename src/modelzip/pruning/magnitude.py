"""Magnitude pruning (Han et al. 2015): zero the smallest |w|, per layer or globally."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_choice, check_range, register
from ..knobs import Knob
from ..select import weight_layers
from ..state import get_mask, set_mask


def magnitude_masks(scores: list[torch.Tensor], sparsity: float, scope: str,
                    keep: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Masks keeping the largest scores; exactly ``round(sparsity * n)`` zeros per scope.

    ``keep`` (optional existing masks) forces already-pruned entries to stay pruned.
    """
    keep = keep or [None] * len(scores)
    scores = [s.detach().float().abs().clone() for s in scores]
    for s, k in zip(scores, keep):
        if k is not None:
            s[~k] = -1.0  # already pruned: always among the smallest
    if scope == "global":
        flat = torch.cat([s.ravel() for s in scores])
        masks_flat = _keep_top(flat, sparsity)
        out, i = [], 0
        for s in scores:
            out.append(masks_flat[i : i + s.numel()].reshape(s.shape))
            i += s.numel()
        return out
    return [_keep_top(s.ravel(), sparsity).reshape(s.shape) for s in scores]


def _keep_top(flat: torch.Tensor, sparsity: float) -> torch.Tensor:
    n_prune = int(round(sparsity * flat.numel()))
    mask = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        idx = torch.topk(flat, n_prune, largest=False, sorted=False).indices
        mask[idx] = False
    return mask


def _apply_magnitude(model: nn.Module, cfg: Magnitude, **_: Any) -> None:
    layers = weight_layers(model, cfg)
    if not layers:
        return
    weights = [m.weight for _, m in layers]
    keep = [get_mask(m, "weight") for _, m in layers]
    masks = magnitude_masks(weights, cfg.sparsity, cfg.scope, keep)
    for (_, module), mask in zip(layers, masks):
        set_mask(module, "weight", mask)


@register(_apply_magnitude)
@dataclass
class Magnitude(Config):
    """Unstructured magnitude pruning to ``sparsity`` (fraction of weights removed).

    ``scope="layer"`` prunes each layer to the same sparsity; ``"global"`` ranks all
    selected weights together (layers with many small weights lose more).
    """

    sparsity: float = 0.5
    scope: str = "layer"

    kind = "prune"

    def validate(self) -> None:
        check_range(self, "sparsity", 0.0, 1.0, hi_open=True)
        check_choice(self, "scope", ("layer", "global"))

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        return sparsity_knob(self, model)


def existing_sparsity(model: nn.Module, cfg: Config) -> float:
    """Fraction of zeros already in the weights ``cfg`` selects."""
    ws = [m.weight for _, m in weight_layers(model, cfg)]
    total = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / total if total else 0.0


def sparsity_knob(cfg: Config, model: nn.Module | None) -> Knob:
    """Sparsity from what the model already has (or 0) up to 0.98 (or the request)."""
    floor = existing_sparsity(model, cfg) if model is not None else 0.0
    return Knob("sparsity", floor, max(0.98, cfg.sparsity))
