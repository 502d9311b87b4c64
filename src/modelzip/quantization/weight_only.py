"""Weight-only quantization: integer codes + scales replace the float weight.

The layer keeps its type; its ``weight`` Parameter becomes buffers ``weight_codes``
(int8/uint8) and ``weight_scale`` (+ ``weight_zero`` when asymmetric, + ``weight_inscale``
after AWQ), dequantized before each forward and cached in inference (see
:mod:`modelzip.state`). The file stores the codes packed to ``bits``. With
``packed=True`` (the default) Linear and Embedding layers then become
:class:`~modelzip.quantization.packed.PackedLinear` / ``PackedEmbedding``, which keep the
codes packed in memory and dequantize layer by layer on the fly (``mz.unpack`` restores
the fp32-cached form).

Methods: ``rtn`` (round to nearest), ``gptq`` and ``awq`` (need ``calib_data``; they
handle Linear layers block by block through transformer blocks, other layers get RTN).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..batches import take
from ..blockwise import Method, run
from ..calib import InputStats
from ..config import Config, check_choice, check_int, check_range, register
from ..errors import ConfigError, FormatError, UnsupportedModelError
from ..knobs import Knob, ladder_from
from ..ops.awq import awq
from ..ops.gptq import gptq
from ..ops.quant import QSpec, dequantize, qparams, quantize, search_clip
from ..select import weight_layers
from ..state import install_reparam, register_reparam, set_bits


@register_reparam("affine")
def _affine_weight(module: nn.Module, name: str, meta: dict[str, Any]) -> torch.Tensor:
    codes = getattr(module, f"{name}_codes")
    scale = getattr(module, f"{name}_scale")
    zero = getattr(module, f"{name}_zero", None)
    if zero is None:
        zero = torch.zeros_like(scale)
    w = dequantize(codes, scale, zero, meta["group_size"], binary=bool(meta.get("binary")))
    inscale = getattr(module, f"{name}_inscale", None)
    w = w / inscale if inscale is not None else w
    dtype = meta.get("dtype")
    if dtype is not None:  # a bf16 / fp16 model keeps its dtype
        if dtype not in _FLOAT_DTYPES:
            raise FormatError(f"bad weight dtype {dtype!r}")
        w = w.to(_FLOAT_DTYPES[dtype])
    return w


_FLOAT_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def effective_group(cols: int, group_size: int | None) -> int | None:
    """The group size used for ``cols`` inputs: the layer width when it is smaller
    (= per channel, None); a width that is not a multiple gets a shorter last group."""
    if group_size is None or group_size == -1:
        return group_size
    return None if group_size >= cols else group_size


def install_codes(module: nn.Module, name: str, codes: torch.Tensor, scale: torch.Tensor,
                  zero: torch.Tensor | None, spec: QSpec,
                  inscale: torch.Tensor | None = None) -> None:
    """Put integer ``codes`` with their scales in place of float tensor ``name``."""
    if spec.bits > 8:
        raise ConfigError("weight codes wider than 8 bits are not supported")
    dtype = torch.int8 if spec.signed else torch.uint8
    tensors = {"codes": codes.to(dtype), "scale": scale.float()}
    if not spec.symmetric:
        tensors["zero"] = zero.to(torch.int16)
    if inscale is not None:
        tensors["inscale"] = inscale.float()
    meta = {"kind": "affine", "bits": spec.bits, "group_size": spec.group_size,
            "symmetric": spec.symmetric, "binary": spec.binary}
    old = getattr(module, name, None)
    dtype = str(old.dtype).removeprefix("torch.") if isinstance(old, torch.Tensor) else ""
    if dtype in _FLOAT_DTYPES:
        meta["dtype"] = dtype
    install_reparam(module, name, meta, tensors)
    set_bits(module, f"{name}_codes", spec.bits, spec.signed)


def layer_spec(module: nn.Module, cfg: Any) -> QSpec:
    """The QSpec of ``module``'s weight under ``cfg`` (bits, symmetric, group_size)."""
    w = module.weight
    cols = w[0].numel() if w.dim() > 1 else w.numel()
    return QSpec(cfg.bits, cfg.symmetric, effective_group(cols, cfg.group_size))


def _check_fresh(fqn: str, module: nn.Module) -> None:
    if getattr(module, "_mz_reparam", {}).get("weight"):
        raise UnsupportedModelError(f"layer '{fqn}' is already quantized or clustered")


def _rtn(model: nn.Module, cfg: WeightOnly, skip: set[str] = frozenset(), **_: Any) -> None:
    for fqn, module in weight_layers(model, cfg):
        if fqn in skip:
            continue
        _check_fresh(fqn, module)
        w = module.weight.detach()
        spec = layer_spec(module, cfg)
        ratio = search_clip(w, spec) if cfg.clip == "mse" else 1.0
        scale, zero = qparams(w, spec, ratio)
        codes = quantize(w, scale, zero, spec, rounding=cfg.rounding)
        install_codes(module, "weight", codes, scale, zero, spec)


def _code_dtype(spec: QSpec) -> torch.dtype:
    return torch.int8 if spec.signed else torch.uint8


def _calibrated(model: nn.Module, cfg: WeightOnly, ctx: dict[str, Any], solve: Any) -> None:
    """Run ``solve(module, spec, stats) -> results`` on every selected Linear, block by
    block (:mod:`modelzip.blockwise`); other selected layers get RTN."""
    chosen = {f: m for f, m in weight_layers(model, cfg) if isinstance(m, nn.Linear)}
    for fqn, module in chosen.items():
        _check_fresh(fqn, module)

    def install(fqn: str, module: nn.Module, res: dict[str, torch.Tensor]) -> None:
        install_codes(module, "weight", res["codes"], res["scale"], res.get("zero"),
                      layer_spec(module, cfg), res.get("inscale"))

    method = Method(new_stats=lambda m: InputStats(m.in_features, True),
                    solve=lambda fqn, m, st: solve(m, layer_spec(m, cfg), st),
                    install=install)
    data = ctx.get("calib_data")
    missing = run(model, None if data is None else take(data, cfg.max_batches), chosen,
                  method, device=ctx.get("device", "cpu"),
                  checkpoint_dir=ctx.get("checkpoint_dir"), config=cfg.to_dict(),
                  rebuild_weights=not cfg.packed)  # packing reads the codes only
    _rtn(model, cfg, skip=set(chosen) - set(missing))


def _results(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, spec: QSpec,
             **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"codes": codes.to(_code_dtype(spec)), "scale": scale.float(), **extra}
    if not spec.symmetric:
        out["zero"] = zero.to(torch.int16)
    return out


def _gptq(model: nn.Module, cfg: WeightOnly, **ctx: Any) -> None:
    def solve(module: nn.Module, spec: QSpec, st: InputStats) -> dict[str, torch.Tensor]:
        codes, scale, zero = gptq(module.weight.detach(), st.hessian, spec,
                                  blocksize=cfg.blocksize, percdamp=cfg.percdamp,
                                  actorder=cfg.actorder, clip=cfg.clip == "mse")
        return _results(codes, scale, zero, spec)

    _calibrated(model, cfg, ctx, solve)


def _awq(model: nn.Module, cfg: WeightOnly, **ctx: Any) -> None:
    def solve(module: nn.Module, spec: QSpec, st: InputStats) -> dict[str, torch.Tensor]:
        w = module.weight.detach().float()
        s, ratio = awq(w, st.abs_mean, st.hessian, spec, clip=cfg.clip != "none")
        ws = w * s
        scale, zero = qparams(ws, spec, ratio)
        codes = quantize(ws, scale, zero, spec)
        return _results(codes, scale, zero, spec, inscale=s.float())

    _calibrated(model, cfg, ctx, solve)


_METHODS = {"rtn": _rtn, "gptq": _gptq, "awq": _awq}


def _apply_weight_only(model: nn.Module, cfg: WeightOnly, **ctx: Any) -> None:
    fn = _METHODS.get(cfg.method)
    if fn is None:
        raise UnsupportedModelError(f"WeightOnly method '{cfg.method}' is not available")
    chosen = [f for f, _ in weight_layers(model, cfg)]  # before: finished blocks drop
    fn(model, cfg, **ctx)                                 # their dequantized weight
    if cfg.packed:
        from .packed_convert import pack_model

        pack_model(model, chosen)


def register_method(name: str, fn: Any) -> None:
    """Add a weight-only algorithm under ``method=name``."""
    _METHODS[name] = fn


@register(_apply_weight_only)
@dataclass
class WeightOnly(Config):
    """Weight-only quantization to ``bits`` (1-8) per group of ``group_size`` inputs.

    ``group_size=None``: one scale per output channel; ``-1``: one per tensor.
    ``bits=1`` (symmetric) is binary sign x scale; ``bits=2`` symmetric is ternary.
    ``clip``: "mse" searches each group's clipping ratio (RTN, GPTQ); AWQ always searches
    its clip unless "none". ``method="gptq"|"awq"`` need ``calib_data``.
    ``packed=True`` (default) keeps Linear and Embedding codes packed in memory and
    dequantizes them per layer at run time; ``packed=False`` keeps plain layers with an
    fp32 weight cache (faster, ~1.25x the fp32 model's memory at 4 bits).
    """

    bits: int = 4
    group_size: int | None = 128
    method: str = "rtn"
    symmetric: bool = True
    clip: str | None = None
    rounding: str = "nearest"
    actorder: bool = False
    percdamp: float = 0.01
    blocksize: int = 128
    max_batches: int | None = None
    packed: bool = True

    kind = "quantize"
    default_targets = ("Linear", "Conv1d", "Conv2d", "Embedding")

    def validate(self) -> None:
        check_int(self, "bits", 1, 8)
        check_int(self, "group_size", -1, None, optional=True)
        if self.group_size == 0:
            raise ConfigError("WeightOnly.group_size must be positive, -1 or None")
        check_choice(self, "method", ("rtn", "gptq", "awq"))
        check_choice(self, "clip", (None, "mse", "none"))
        check_choice(self, "rounding", ("nearest", "floor", "stochastic"))
        for name in ("symmetric", "actorder", "packed"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"WeightOnly.{name} must be true or false")
        check_range(self, "percdamp", 0.0, 1.0, lo_open=True)
        check_int(self, "blocksize", 1)
        check_int(self, "max_batches", 1, optional=True)
        if not self.symmetric and self.bits == 1:
            raise ConfigError("1-bit is binary and symmetric only; use symmetric=True")

    def knob(self, model: nn.Module | None = None) -> Knob | None:
        """Bits, 8 (gentlest) down to 2."""
        ladder = (8, 7, 6, 5, 4, 3, 2)
        return Knob("bits", 8, ladder[-1], ladder_from(self.bits, ladder))
