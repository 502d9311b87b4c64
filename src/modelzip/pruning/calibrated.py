"""Calibrated one-shot pruning of transformers: SparseGPT and Wanda.

Both walk the model block by block (:mod:`modelzip.blockwise`): each block's Linear layers
are pruned from statistics of their inputs *as produced by the already-pruned earlier
blocks*.
Wanda scores |W| x ||X_j||_2 and compares weights within each output row (Sun et al. 2023);
SparseGPT (Frantar & Alistarh 2023) also reconstructs the remaining weights from the
Hessian (see ``ops/sparsegpt.py``). Both support unstructured sparsity and N:M.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..batches import take
from ..blockwise import Method, run
from ..calib import InputStats, in_features
from ..config import Config, check_choice, check_int, check_range, register
from ..errors import ConfigError
from ..knobs import Knob
from ..ops.sparsegpt import sparsegpt
from ..ops.sparsity import nm_mask, rowwise_mask, wanda_scores
from ..select import weight_layers
from .magnitude import magnitude_masks, sparsity_knob
from .nm import apply_keep, check_nm


def _linear_layers(cfg: Config) -> Any:
    def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(f, m) for f, m in weight_layers(model, cfg)
                if (hasattr(m, "in_features") or _is_conv1d(m)) and m.weight.dim() == 2]

    return layers


def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D"  # Hugging Face GPT-2's transposed Linear


def _weight(m: nn.Module) -> torch.Tensor:
    """The (out, in) weight matrix (Hugging Face Conv1D stores it as (in, out))."""
    w = m.weight.detach().float()
    return w.t().contiguous() if _is_conv1d(m) else w


def _install(m: nn.Module, keep: torch.Tensor, w: torch.Tensor | None = None) -> None:
    t = (lambda x: x.t()) if _is_conv1d(m) else (lambda x: x)
    apply_keep(m, t(keep), None if w is None else t(w))


def _run(model: nn.Module, cfg: Config, ctx: dict[str, Any], prune_layer: Any,
         hessian: bool) -> None:
    """``prune_layer(module, stats) -> {"keep": mask[, "weight": w]}`` on every selected
    layer, block by block; results are (out, in) oriented."""
    def install(fqn: str, module: nn.Module, res: dict[str, torch.Tensor]) -> None:
        _install(module, res["keep"], res.get("weight"))

    method = Method(new_stats=lambda m: InputStats(in_features(m), hessian),
                    solve=lambda fqn, m, st: prune_layer(m, st), install=install)
    data = ctx.get("calib_data")
    run(model, None if data is None else take(data, cfg.max_batches),
        dict(_linear_layers(cfg)(model)), method, device=ctx.get("device", "cpu"),
        checkpoint_dir=ctx.get("checkpoint_dir"), config=cfg.to_dict())


def _apply_wanda(model: nn.Module, cfg: Wanda, **ctx: Any) -> None:
    def prune_layer(module: nn.Module, st: InputStats) -> dict[str, torch.Tensor]:
        scores = wanda_scores(_weight(module), st.l2_norm)
        if cfg.n:
            keep = nm_mask(scores, cfg.n, cfg.m)
        elif cfg.group == "layer":
            keep = magnitude_masks([scores], cfg.sparsity, "layer")[0]
        else:
            keep = rowwise_mask(scores, cfg.sparsity)
        return {"keep": keep}

    _run(model, cfg, ctx, prune_layer, hessian=False)


def _apply_sparsegpt(model: nn.Module, cfg: SparseGPT, **ctx: Any) -> None:
    def prune_layer(module: nn.Module, st: InputStats) -> dict[str, torch.Tensor]:
        w, keep = sparsegpt(_weight(module), st.hessian, cfg.sparsity, n=cfg.n, m=cfg.m,
                            blocksize=cfg.blocksize, percdamp=cfg.percdamp)
        w = torch.where(keep, w, torch.zeros_like(w)).to(module.weight.dtype)
        return {"keep": keep, "weight": w}

    _run(model, cfg, ctx, prune_layer, hessian=True)


@dataclass
class _Calibrated(Config):
    sparsity: float = 0.5
    n: int | None = None
    m: int | None = None
    max_batches: int | None = None

    kind = "prune"
    default_targets = ("Linear", "Conv1D")

    def validate(self) -> None:
        check_range(self, "sparsity", 0.0, 1.0, hi_open=True)
        check_nm(self, optional=True)
        check_int(self, "max_batches", 1, optional=True)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """Sparsity, unless an N:M pattern fixes it."""
        return None if self.n else sparsity_knob(self, model)


@register(_apply_wanda)
@dataclass
class Wanda(_Calibrated):
    """Wanda: prune by |W| x input norm within each output row; needs ``calib_data``.

    ``sparsity``: fraction removed per row; with ``n``/``m`` keep n of every m inputs.
    ``group``: where scores compete, ``"row"`` (each output, as published: best for LLMs)
    or ``"layer"`` (the paper's ablation; better on some small models); N:M is per row.
    ``max_batches``: calibration batches used (all when None).
    """

    group: str = "row"

    def validate(self) -> None:
        super().validate()
        check_choice(self, "group", ("row", "layer"))
        if self.n and self.group != "row":
            raise ConfigError("Wanda: N:M groups are within rows; leave group='row'")


@register(_apply_sparsegpt)
@dataclass
class SparseGPT(_Calibrated):
    """SparseGPT: Hessian-based pruning with weight reconstruction; needs ``calib_data``.

    ``blocksize``: columns per lazy-update block; ``percdamp``: Hessian damping (fraction
    of its mean diagonal).
    """

    blocksize: int = 128
    percdamp: float = 0.01

    def validate(self) -> None:
        super().validate()
        check_int(self, "blocksize", 1)
        check_range(self, "percdamp", 0.0, 1.0)
