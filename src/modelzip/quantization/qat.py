"""Quantization-aware training: fake quantization with learnable scales (LSQ, Esser et al.
2020) and a straight-through estimator, then :func:`convert` to real integer codes.

``mz.quantize(model, mz.QAT(bits=4))`` re-parametrises each selected weight as
``weight_latent`` (float, trainable) and ``weight_scale`` (trainable, per channel or
group); the forward pass sees ``round(clamp(w / s)) * s``. Train with ``mz.train`` /
``mz.finetune``; then ``mz.convert(model)`` replaces latent weights by integer codes
(the "affine" weight-only layout, or :class:`Int8Linear` for ``activations="dynamic"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_choice, check_int, register
from ..errors import ConfigError, UnsupportedModelError
from ..knobs import Knob
from ..ops.quant import QSpec, group_counts, grouped, qparams, search_clip, ungroup
from ..select import weight_layers
from ..state import install_reparam, register_reparam, uninstall_reparam
from .int8 import Int8Linear
from .weight_only import install_codes, layer_spec

EPS = 1e-8


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    return (x - x * g).detach() + x * g


def _spec(meta: dict[str, Any]) -> QSpec:
    return QSpec(meta["bits"], True, meta["group_size"])


@register_reparam("lsq")
def _lsq_weight(module: nn.Module, name: str, meta: dict[str, Any]) -> torch.Tensor:
    w = getattr(module, f"{name}_latent")
    spec = _spec(meta)
    n = float(group_counts(w, spec.group_size).max())
    s = _grad_scale(getattr(module, f"{name}_scale"), 1.0 / (n * max(spec.qmax, 1)) ** 0.5)
    s = s.abs().unsqueeze(-1) + EPS
    g = grouped(w, spec.group_size) / s
    if spec.binary:
        sign = torch.where(g >= 0, 1.0, -1.0)
        q = g.clamp(-1, 1) + (sign - g.clamp(-1, 1)).detach()
    else:
        q = _ste_round(g.clamp(spec.qmin, spec.qmax))
    return ungroup(q * s, w.shape)


def _apply_qat(model: nn.Module, cfg: QAT, **_: Any) -> None:
    for fqn, module in weight_layers(model, cfg):
        if getattr(module, "_mz_reparam", {}).get("weight"):
            raise UnsupportedModelError(f"layer '{fqn}' is already quantized or clustered")
        w = module.weight.detach().float()
        spec = layer_spec(module, cfg)
        scale, _ = qparams(w, spec, search_clip(w, spec))
        meta = {"kind": "lsq", "bits": cfg.bits, "group_size": spec.group_size,
                "activations": cfg.activations}
        trainable = ("latent", "scale") if cfg.learn_scale else ("latent",)
        install_reparam(module, "weight", meta, {"latent": w, "scale": scale}, trainable)


def convert(model: nn.Module) -> nn.Module:
    """Turn every QAT layer into real integer codes, in place; returns the same model."""
    for fqn, module in list(model.named_modules()):
        meta = getattr(module, "_mz_reparam", {}).get("weight")
        if not meta or meta.get("kind") != "lsq":
            continue
        spec = _spec(meta)
        w = module.weight_latent.detach()
        scale = module.weight_scale.detach().abs() + EPS
        g = grouped(w, spec.group_size) / scale.unsqueeze(-1)
        q = (g >= 0).int() if spec.binary else torch.round(g.clamp(spec.qmin, spec.qmax))
        codes = ungroup(q, w.shape).to(torch.int32)
        zero = torch.zeros_like(scale)
        uninstall_reparam(module, "weight", keep_value=False)
        if meta.get("activations") == "dynamic" and type(module) is nn.Linear and fqn:
            new = Int8Linear(module.in_features, module.out_features, module.bias is not None)
            new.set_weight(codes.to(torch.int8), scale.reshape(-1))
            if module.bias is not None:
                new.bias.data.copy_(module.bias.detach())
            model.set_submodule(fqn, new)
        else:
            install_codes(module, "weight", codes, scale, zero, spec)
    return model


@register(_apply_qat)
@dataclass
class QAT(Config):
    """Fake-quantize weights to ``bits`` (symmetric, LSQ learnable scales) for training.

    ``group_size``: None per channel, -1 per tensor, or a group of inputs.
    ``activations="dynamic"`` (bits=8, per channel): :func:`convert` yields Int8Linear.
    """

    bits: int = 4
    group_size: int | None = None
    learn_scale: bool = True
    activations: str | None = None

    kind = "quantize"
    default_targets = ("Linear", "Conv1d", "Conv2d", "Embedding")
    symmetric = True

    def validate(self) -> None:
        check_int(self, "bits", 1, 8)
        check_int(self, "group_size", -1, None, optional=True)
        if self.group_size == 0:
            raise ConfigError("QAT.group_size must be positive, -1 or None")
        if not isinstance(self.learn_scale, bool):
            raise ConfigError("QAT.learn_scale must be true or false")
        check_choice(self, "activations", (None, "dynamic"))
        if self.activations == "dynamic" and (self.bits != 8 or self.group_size is not None):
            raise ConfigError("QAT.activations='dynamic' needs bits=8 and group_size=None")

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """Bits, 8 (gentlest) down to 1; none when int8 activations fix 8 bits."""
        if self.activations == "dynamic":
            return None
        return Knob("bits", 8, 1, (8, 7, 6, 5, 4, 3, 2, 1))
