"""N:M semi-structured sparsity (2:4, 4:8): keep n of every m consecutive input weights.

The pattern that sparse tensor cores accelerate (Mishra et al. 2021). Groups run along the
input dimension of each output row (the flattened in*kh*kw of a convolution); a row whose
length is not a multiple of m is handled as if zero-padded, like the kernels do. The .mzip
stores an N:M mask as one combination index per group (3 bits per 4 weights for 2:4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_int, register
from ..errors import ConfigError
from ..knobs import Knob
from ..ops.sparsity import nm_mask
from ..select import weight_layers
from ..state import get_mask, set_mask


def check_nm(cfg: Config, optional: bool = False) -> None:
    """Validate ``cfg.n`` / ``cfg.m`` (both None when ``optional``, else 0 < n < m <= 16)."""
    if optional and cfg.n is None and cfg.m is None:
        return
    if (cfg.n is None) != (cfg.m is None):
        raise ConfigError(f"{type(cfg).__name__}: give both n and m, or neither")
    check_int(cfg, "m", 2, 16)
    check_int(cfg, "n", 1, cfg.m - 1)


def apply_keep(module: nn.Module, keep: torch.Tensor, weight: torch.Tensor | None = None) -> None:
    """Install mask ``keep`` (any shape with the weight's numel), optionally new values."""
    w = module.weight
    with torch.no_grad():
        if weight is not None:
            w.copy_(weight.reshape(w.shape).to(w.dtype))
    old = get_mask(module, "weight")
    keep = keep.reshape(w.shape)
    set_mask(module, "weight", keep if old is None else keep & old)


def _apply_nm(model: nn.Module, cfg: NM, **_: Any) -> None:
    for _, module in weight_layers(model, cfg):
        w = module.weight.detach()
        apply_keep(module, nm_mask(w.abs().reshape(w.shape[0], -1), cfg.n, cfg.m))


@register(_apply_nm)
@dataclass
class NM(Config):
    """Magnitude N:M pruning: in every ``m`` consecutive inputs keep the ``n`` largest |w|."""

    n: int = 2
    m: int = 4

    kind = "prune"

    def validate(self) -> None:
        check_nm(self)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """None: an N:M pattern is what the hardware needs, so it is not weakened."""
        return None
