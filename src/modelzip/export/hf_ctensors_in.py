"""Reading compressed-tensors models (e.g. made by llm-compressor) into modelzip.

transformers loads such a folder with the library's quantization state attached to each
Linear. :func:`adopt_ctensors` turns that state into modelzip's own: weight-only int
codes become ``WeightOnly`` codes (``install_codes``: the file stores them packed),
W8A8 int8 layers become :class:`~modelzip.quantization.int8.Int8Linear` (dynamic per
token, or static per tensor with the checkpoint's input scale and zero point). The codes
are recovered exactly from the library's own dequantization. Schemes modelzip has no
layer for (fp8, fp4, block, per-tensor weight scales ...) are kept as dequantized float
weights, with a warning that names them.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from ..ops.quant import QSpec
from ..quantization.int8 import Int8Linear
from ..quantization.weight_only import install_codes


def _codes(module: nn.Module, args: Any) -> torch.Tensor:
    from compressed_tensors.quantization.lifecycle.forward import quantize

    zp = getattr(module, "weight_zero_point", None)
    return quantize(x=module.weight.detach(), scale=module.weight_scale.detach(),
                    zero_point=None if zp is None else zp.detach(), args=args,
                    dtype=torch.int8)


def _unsupported(scheme: Any) -> str | None:
    w, a = scheme.weights, scheme.input_activations
    if w is None or str(getattr(w.type, "value", w.type)) != "int":
        return "non-integer weights"
    strategy = str(getattr(w.strategy, "value", w.strategy))
    if strategy not in ("group", "channel"):
        return f"weight strategy {strategy}"
    if a is None:
        return None
    a_strategy = str(getattr(a.strategy, "value", a.strategy))
    ok = (str(getattr(a.type, "value", a.type)) == "int" and a.num_bits == 8 and w.num_bits == 8
          and strategy == "channel" and w.symmetric
          and ((a.dynamic is True and a_strategy == "token" and a.symmetric)
               or (a.dynamic is False and a_strategy == "tensor")))
    return None if ok else "activation scheme without a modelzip layer"


def _clear(module: nn.Module) -> None:
    from compressed_tensors.quantization import QuantizationMetadata

    QuantizationMetadata.clear_quantization(module)
    for attr in ("quantization_status", "quantization_enabled"):
        if hasattr(module, attr):
            delattr(module, attr)
    module.__dict__.pop("forward", None)


def _adopt_layer(model: nn.Module, fqn: str, module: nn.Module, scheme: Any) -> None:
    w = scheme.weights
    codes = _codes(module, w)
    scale = module.weight_scale.detach().float().clone()
    zp = getattr(module, "weight_zero_point", None)
    a = scheme.input_activations
    act = None
    if a is not None and a.dynamic is False:
        izp = getattr(module, "input_zero_point", None)
        act = (float(module.input_scale.reshape(-1)[0]),
               0 if izp is None else int(izp.reshape(-1)[0]))
    _clear(module)
    if a is not None:
        new = Int8Linear(module.in_features, module.out_features, module.bias is not None,
                         static=act is not None)
        new.set_weight(codes, scale.reshape(-1))
        if act is not None:
            new.set_activation(*act)
        if module.bias is not None:
            new.bias.data.copy_(module.bias.detach())
        model.set_submodule(fqn, new)
        return
    bits = w.num_bits
    offset = 0 if w.symmetric else 1 << (bits - 1)
    group = None if str(getattr(w.strategy, "value", w.strategy)) == "channel" else w.group_size
    spec = QSpec(bits, bool(w.symmetric), group)
    zero = None if zp is None else zp.detach().to(torch.int16) + offset
    install_codes(module, "weight", codes.to(torch.int16) + offset, scale, zero, spec)


def adopt_ctensors(model: nn.Module) -> nn.Module:
    """Replace compressed-tensors quantization state on ``model`` by modelzip's (in place)."""
    from compressed_tensors.compressors.base import decompress_module

    hook = getattr(model, "ct_decompress_hook", None)
    if hook is not None:
        hook.remove()
        del model.ct_decompress_hook
    kept = []
    for fqn, module in list(model.named_modules()):
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None:
            continue
        decompress_module(module)  # float weight + unpacked scale / zero point
        reason = _unsupported(scheme) if isinstance(module, nn.Linear) else "not a Linear"
        if reason:
            kept.append(f"{fqn} ({reason})")
            _clear(module)
            continue
        _adopt_layer(model, fqn, module, scheme)
    if kept:
        warnings.warn("compressed-tensors layers kept as dequantized float weights: "
                      + ", ".join(kept[:8]), stacklevel=2)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    model.is_quantized = False
    return model
