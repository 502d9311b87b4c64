"""Weight sharing by k-means clustering (Deep Compression, Han, Mao & Dally 2016, sec. 3).

Each selected layer's weight becomes ``weight_codes`` (an integer buffer, one cluster
index per weight, packed to log2(k) bits in the file) plus a trainable
``weight_codebook`` Parameter of k centroids. The forward pass sees
``codebook[codes] * weight_mask``: pruned weights stay zero, and training the model
(``mz.finetune``) trains the centroids with the *sum* of the gradients of the weights
that share them, which is the paper's centroid fine-tuning rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import Config, check_choice, check_int, register
from .devices import resolve_device
from .errors import UnsupportedModelError
from .knobs import Knob, ladder_from
from .ops.kmeans import INITS, kmeans1d
from .select import weight_layers
from .state import get_mask, install_reparam, register_reparam, set_bits, uninstall_reparam


@register_reparam("codebook")
def _codebook_weight(module: nn.Module, name: str, meta: dict[str, Any]) -> torch.Tensor:
    codes = getattr(module, f"{name}_codes")
    codebook = getattr(module, f"{name}_codebook")
    # index_select takes int32 indices: cheaper than widening 22M codes to int64
    return codebook.index_select(0, codes.reshape(-1).int()).reshape(codes.shape)


def code_bits(clusters: int) -> int:
    """Bits per cluster index: ceil(log2(k)), at least 1."""
    return max(1, math.ceil(math.log2(clusters)))


def cluster_tensor(w: torch.Tensor, mask: torch.Tensor | None, clusters: int,
                   init: str = "linear", device: Any = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, codebook) for tensor ``w``, on ``w``'s device; only entries kept by ``mask``
    are clustered. ``device``: where k-means runs (default: where ``w`` is)."""
    dev = w.device if device is None else resolve_device(device)
    flat = w.detach().to(dev).double().reshape(-1)
    keep = (mask.reshape(-1).to(dev) if mask is not None
            else torch.ones_like(flat, dtype=torch.bool))
    cents, labels = kmeans1d(flat[keep], clusters, init)
    codes = torch.zeros(flat.numel(), dtype=torch.int64, device=dev)
    codes[keep] = labels
    dtype = torch.uint8 if clusters <= 256 else torch.int32
    return codes.to(dtype).reshape(w.shape).to(w.device), cents.float().to(w.device)


def cluster_layer(module: nn.Module, cfg: Cluster, name: str = "weight",
                  device: Any = None) -> None:
    """Replace ``module.<name>`` by shared weights (codes + trainable codebook); k-means
    runs on ``device`` (default: where the weight is), the results stay with the layer."""
    meta = getattr(module, "_mz_reparam", {}).get(name)
    if meta is not None and meta.get("kind") != "codebook":
        raise UnsupportedModelError(f"{type(module).__name__}.{name} is already quantized")
    if meta is not None:
        uninstall_reparam(module, name)  # re-cluster the current shared weights
    codes, codebook = cluster_tensor(getattr(module, name), get_mask(module, name),
                                     cfg.clusters, cfg.init, device)
    install_reparam(module, name, {"kind": "codebook", "clusters": cfg.clusters},
                    {"codes": codes, "codebook": codebook}, trainable=("codebook",))
    set_bits(module, f"{name}_codes", code_bits(cfg.clusters), False)


def _apply_cluster(model: nn.Module, cfg: Cluster, *, device: Any = None, **_: Any) -> None:
    for _fqn, module in weight_layers(model, cfg):
        cluster_layer(module, cfg, device=device)


@register(_apply_cluster)
@dataclass
class Cluster(Config):
    """k-means weight sharing: ``clusters`` shared values per layer (log2(k)-bit codes).

    ``init="linear"`` spaces the initial centroids evenly over [min, max] of the kept
    weights (the paper's choice); ``"kmeans++"`` uses D^2 sampling (seeded).
    """

    clusters: int = 16
    init: str = "linear"

    kind = "cluster"
    default_targets = ("Linear", "Conv1d", "Conv2d", "Embedding")

    def validate(self) -> None:
        check_int(self, "clusters", 2, 1 << 16)
        check_choice(self, "init", INITS)

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """Shared values per layer, 256 (gentlest) down to 4."""
        ladder = ladder_from(self.clusters, (256, 128, 64, 32, 16, 8, 4))
        return Knob("clusters", ladder[0], ladder[-1], ladder)
