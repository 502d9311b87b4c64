"""Hugging Face ``compressed-tensors`` export: the format llm-compressor writes and vLLM
serves, written with the ``compressed-tensors`` library's own compressors and config.

Weight-only integer codes (2-8 bits, per group or per channel, symmetric or not) become
``pack-quantized`` (W4A16 ...); ``Int8`` layers become ``int-quantized`` W8A8 with the
matching activation scheme (dynamic per token, or static per tensor with the calibrated
scale and zero point). The codes the library writes are checked to be modelzip's codes.
Layers the format cannot express (clusters, sparse + quantized, AWQ or SmoothQuant input
scales, 1-bit, embeddings, the output head) are written dense and listed in the summary;
every Linear left unquantized is in the config's ``ignore`` list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelzipError, UnsupportedModelError
from ..ops.pack import unpack_rows
from ..quantization.int8 import Int8Linear
from ..quantization.packed import PackedLinear
from ..state import get_mask
from .hf_dense import dense_twin, write_small_files

# Why asymmetric weight-only layers are "naive-quantized" (int8 codes, unpacked zero
# points) and not "pack-quantized": checked with compressed-tensors 0.20.1 and transformers
# 5.24 (tests/test_hf_export.py::test_asymmetric_pack_quantized_limitation). Set to
# "pack-quantized" once transformers loads that form with a plain from_pretrained.
ASYM_FORMAT = "naive-quantized"
ASYM_NOTE = (
    "asymmetric weight-only layers are written naive-quantized (int8 codes, 2x the bytes of "
    "packed 4-bit), not pack-quantized: compressed-tensors 0.20.1 "
    "PackedQuantizationCompressor.compress (compressors/pack_quantized/base.py) packs zero "
    "points to int32 [out*bits/32, groups], but on the meta model that transformers 5.24 "
    "builds before loading (CompressedTensorsHfQuantizer -> ModelCompressor.compress_model) "
    "the same method's meta branch leaves weight_zero_point unpacked ([out, groups]), so "
    "from_pretrained reports MISMATCH on every weight_zero_point and raises; only "
    "CompressedTensorsConfig(dequantize=True) loads it")
CONV1D_NOTE = ("GPT-2 Conv1D: compressed-tensors 0.20 compresses only nn.Linear and "
               "nn.Embedding (COMPRESSIBLE_MODULE_TYPES, compressors/base.py); written dense")


def _ct() -> Any:
    try:
        import compressed_tensors
    except ImportError:
        raise ModelzipError("compressed-tensors export needs: pip install 'modelzip[hf]'"
                            " (the compressed-tensors package)") from None
    return compressed_tensors


@dataclass
class LinearCodes:
    """A Linear layer's integer weight in compressed-tensors' convention (signed codes,
    zero points in the same signed range)."""

    codes: torch.Tensor          # int8 [out, in]
    scale: torch.Tensor          # float32 [out, groups] or [out, 1]
    zero: torch.Tensor | None    # int8, like scale; None when symmetric
    bits: int
    strategy: str                # "group" | "channel"
    group_size: int | None
    activations: str | None = None   # None (weight-only) | "dynamic" | "static"
    act_scale: torch.Tensor | None = None
    act_zero: torch.Tensor | None = None

    @property
    def key(self) -> tuple:
        return (self.bits, self.strategy, self.group_size, self.zero is None, self.activations)


def _affine(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None,
            meta: dict[str, Any], cols: int) -> LinearCodes | str:
    bits, group = meta["bits"], meta["group_size"]
    if meta.get("binary"):
        return "1-bit binary codes (sign x scale) have no compressed-tensors form"
    if group == -1:
        return "per-tensor weight scale: exported dense"
    if group is not None and cols % group:
        return f"width {cols} is not a multiple of group size {group}"
    offset = 0 if meta["symmetric"] else 1 << (bits - 1)
    ct_zero = None if meta["symmetric"] else (zero.to(torch.int16) - offset).to(torch.int8)
    return LinearCodes((codes.to(torch.int16) - offset).to(torch.int8), scale.float(),
                       ct_zero, bits, "channel" if group is None else "group", group)


def linear_codes(module: nn.Module) -> LinearCodes | str | None:
    """``module``'s weight as compressed-tensors codes; a reason string when it must be
    written dense; None for a plain float Linear."""
    if isinstance(module, Int8Linear):
        if hasattr(module, "input_scale"):
            return "SmoothQuant input scales have no compressed-tensors form"
        lc = LinearCodes(module.weight_codes.t().contiguous(), module.weight_scale[:, None],
                         None, 8, "channel", None, "static" if module.static else "dynamic")
        if module.static:
            lc.act_scale = module.act_scale.float().reshape(1)
            lc.act_zero = module.act_zero.to(torch.int8).reshape(1)
        return lc
    if isinstance(module, PackedLinear):
        meta = {"bits": module.spec.bits, "group_size": module.spec.group_size,
                "symmetric": module.spec.symmetric, "binary": module.spec.binary}
        if hasattr(module, "weight_inscale"):
            return "AWQ input scales have no compressed-tensors form"
        u = unpack_rows(module.codes, meta["bits"], module.in_features).to(torch.int16)
        return _affine(u - module.offset, module.weight_scale,
                       getattr(module, "weight_zero", None), meta, module.in_features)
    if not isinstance(module, nn.Linear):
        return None
    meta = getattr(module, "_mz_reparam", {}).get("weight")
    if meta is None:
        return "pruned (masked) weights, written dense" if get_mask(module, "weight") \
            is not None else None
    if meta["kind"] != "affine":
        return f"{meta['kind']} weights (clustered) have no compressed-tensors form"
    if get_mask(module, "weight") is not None:
        return "sparse and quantized: compressed-tensors 0.20 has no sparse compressor"
    if hasattr(module, "weight_inscale"):
        return "AWQ input scales have no compressed-tensors form"
    return _affine(module.weight_codes, module.weight_scale,
                   getattr(module, "weight_zero", None), meta, module.in_features)


def _scheme(lc: LinearCodes, targets: list[str]) -> Any:
    q = _ct().quantization
    weights = q.QuantizationArgs(num_bits=lc.bits, type="int", symmetric=lc.zero is None,
                                 strategy=lc.strategy, group_size=lc.group_size)
    acts = None
    if lc.activations == "dynamic":
        acts = q.QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token",
                                  dynamic=True)
    elif lc.activations == "static":
        acts = q.QuantizationArgs(num_bits=8, type="int", symmetric=False, strategy="tensor",
                                  dynamic=False)
    # asymmetric weight-only: see ASYM_NOTE
    fmt = ("int-quantized" if acts is not None else
           "pack-quantized" if lc.zero is None else ASYM_FORMAT)
    return q.QuantizationScheme(targets=targets, weights=weights, input_activations=acts,
                                format=fmt)


def dequantized(lc: LinearCodes) -> torch.Tensor:
    """The float32 weight of ``lc`` ((code - zero) x scale), exact whatever the model's
    dtype: the library re-quantizes it to the same codes."""
    def per_column(t: torch.Tensor) -> torch.Tensor:
        return t.float().repeat_interleave(lc.group_size, dim=1) if lc.group_size else t.float()

    q = lc.codes.float()
    if lc.zero is not None:
        q = q - per_column(lc.zero)
    return q * per_column(lc.scale)


def _compress(weight: torch.Tensor, lc: LinearCodes, scheme: Any) -> dict[str, torch.Tensor]:
    """The library's compressor on one layer; its codes must equal modelzip's."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    local = {"weight": weight.float(), "weight_scale": lc.scale.float()}
    if lc.zero is not None:
        local["weight_zero_point"] = lc.zero
    if lc.act_scale is not None:
        local["input_scale"] = lc.act_scale
        local["input_zero_point"] = lc.act_zero
    fmt = getattr(scheme.format, "value", scheme.format)
    out = BaseCompressor.get_value_from_registry(fmt).compress(local, scheme)
    if fmt == "pack-quantized":
        got = unpack_from_int32(out["weight_packed"], lc.bits, out["weight_shape"])
    else:
        got = out["weight"]
    if not torch.equal(got.to(torch.int16), lc.codes.to(torch.int16)):
        raise ModelzipError("compressed-tensors re-encoded a layer to different codes")
    return out


def _dense_reason(module: nn.Module) -> str:
    """Why a compressed non-Linear layer is written dense."""
    if type(module).__name__ == "Conv1D":
        return CONV1D_NOTE
    if isinstance(module, nn.Embedding):
        return "embedding written dense (dequantized), as llm-compressor and vLLM keep it"
    return f"{type(module).__name__} with modelzip codes/masks: written dense"


def _plan(model: nn.Module, head: str) -> tuple[dict[str, LinearCodes], dict[str, str]]:
    quant: dict[str, LinearCodes] = {}
    dense: dict[str, str] = {}
    for fqn, module in model.named_modules():
        res = linear_codes(module)
        if fqn == head and res is not None:
            res = "output head kept dense, as compressed-tensors/vLLM serve it"
        if isinstance(res, LinearCodes):
            quant[fqn] = res
        elif isinstance(res, str):
            dense[fqn] = res
        elif getattr(module, "_mz_reparam", {}) or get_mask(module, "weight") is not None:
            dense[fqn] = _dense_reason(module)
    return quant, dense


def quantization_config(twin: nn.Module, quant: dict[str, LinearCodes]) -> Any:
    """The library's QuantizationConfig: one group per distinct scheme, every other
    Linear ignored, status compressed."""
    q = _ct().quantization
    groups: dict[tuple, list[str]] = {}
    for fqn, lc in quant.items():
        groups.setdefault(lc.key, []).append(fqn)
    schemes = {}
    for i, names in enumerate(groups.values()):
        targets = ["Linear"] if len(groups) == 1 else names
        schemes[f"group_{i}"] = _scheme(quant[names[0]], targets)
    ignore = [f for f, m in twin.named_modules() if isinstance(m, nn.Linear) and f not in quant]
    formats = {getattr(s.format, "value", s.format) for s in schemes.values()}
    fmt = formats.pop() if len(formats) == 1 else "mixed-precision"
    return q.QuantizationConfig(config_groups=schemes, ignore=ignore, format=fmt,
                                quantization_status="compressed")


def _tensors(twin: nn.Module, quant: dict[str, LinearCodes], qcfg: Any
             ) -> dict[str, torch.Tensor]:
    seen: set[int] = set()
    sd: dict[str, torch.Tensor] = {}
    for key, t in twin.state_dict().items():
        if t.data_ptr() in seen and t.numel():  # a tied copy: transformers re-ties it
            continue
        seen.add(t.data_ptr())
        sd[key] = t
    by_name = {n: s for s in qcfg.config_groups.values() for n in s.targets}
    for fqn, lc in quant.items():
        scheme = by_name.get(fqn) or by_name["Linear"]
        del sd[f"{fqn}.weight"]
        for k, v in _compress(dequantized(lc), lc, scheme).items():
            sd[f"{fqn}.{k}"] = v.contiguous()
    return sd


def save_ctensors(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Write ``model`` as a compressed-tensors folder; returns the export summary."""
    _ct()
    from compressed_tensors.compressors import ModelCompressor
    from safetensors.torch import save_file

    # the tensors left dense (embeddings, head, norms) are the model's own: its dtype
    twin, changed = dense_twin(model, getattr(model, "dtype", torch.float32))
    head_mod = twin.get_output_embeddings()
    head = next((n for n, m in twin.named_modules() if m is head_mod), "")
    quant, dense = _plan(model, head)
    if not quant:
        raise UnsupportedModelError(
            "no layer is quantized in a form compressed-tensors can hold (weight-only int "
            "codes or Int8); use format='dense'" + (f" (dense: {dense})" if dense else ""))
    qcfg = quantization_config(twin, quant)
    save_file(_tensors(twin, quant, qcfg), str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    twin.config.architectures = [type(twin).__name__]
    twin.config.save_pretrained(str(folder))
    if twin.can_generate():
        twin.generation_config.save_pretrained(str(folder))
    ModelCompressor(quantization_config=qcfg).update_config(str(folder))
    kept = write_small_files(getattr(model, "_mz_arch", None), folder)
    fmts = {n: getattr(s.format, "value", s.format) for s in qcfg.config_groups.values()
            for n in s.targets}
    schemes = {f: f"W{lc.bits}A{'8' if lc.activations else '16'} {lc.strategy}"
               + (f" {lc.group_size}" if lc.group_size else "")
               + (" sym" if lc.zero is None else " asym")
               + (f" act {lc.activations}" if lc.activations else "")
               + f" ({fmts.get(f) or fmts.get('Linear')})" for f, lc in quant.items()}
    notes = [ASYM_NOTE] if any(lc.zero is not None and lc.activations is None
                               for lc in quant.values()) and ASYM_FORMAT != "pack-quantized" else []
    return {"config_changes": changed, "kept_files": kept, "architecture": type(twin).__name__,
            "format": qcfg.format, "quantized_layers": schemes,
            "dense_layers": [[f, r] for f, r in dense.items()], "notes": notes}
