"""Hugging Face ``dense`` export: the weights modelzip's forward pass sees, in the model's
own parameter names, so that ``from_pretrained`` reproduces modelzip's outputs.

Masks, clusters and integer codes are applied (dequantized); structural changes made by
pruning (intermediate sizes, attention heads, layers) are written into ``config.json``;
a tie between embeddings and head that compression broke is untied in the config.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelzipError, UnsupportedModelError
from ..state import get_mask, is_registered_module, materialize

# model_type family -> (config attribute, parameter key regex, dim) for per-layer sizes
_SIZE_RULES: dict[str, list[tuple[str, str, int]]] = {
    "llama": [("intermediate_size", r"\.mlp\.up_proj\.weight$", 0)],
    "bert": [("intermediate_size", r"\.intermediate\.dense\.weight$", 0)],
    "gpt2": [("n_inner", r"\.mlp\.c_fc\.weight$", 1)],
}
_FAMILY = {"mistral": "llama", "qwen2": "llama", "qwen3": "llama", "roberta": "bert",
           "distilbert": "bert", "xlm-roberta": "bert", "electra": "bert"}
_LAYER_KEY = re.compile(r"\.(?:layers|layer|h)\.(\d+)\.")


def logical_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``model`` as its forward pass sees it, under the plain names
    (``weight`` for codes + scales, masks applied, modelzip bookkeeping left out)."""
    out: dict[str, torch.Tensor] = {}
    for fqn, module in model.named_modules():
        pre = f"{fqn}." if fqn else ""
        reparam = getattr(module, "_mz_reparam", {})
        derived = {f"{n}_" for n in reparam}
        if is_registered_module(module) and hasattr(module, "mz_weights"):
            for name, w in module.mz_weights().items():
                out[pre + name] = w.detach().float()
            derived.add("")  # a compressed module's own buffers are codes
        for name in reparam:
            out[pre + name] = materialize(module, name).detach()
        for name, p in module._parameters.items():
            if p is None or any(name.startswith(d) for d in derived if d):
                continue
            mask = get_mask(module, name)
            out[pre + name] = p.detach() * mask if mask is not None else p.detach()
        if "" in derived:
            continue
        for name, b in module._buffers.items():
            keep = name not in module._non_persistent_buffers_set
            if (b is not None and keep and not name.endswith("_mask")
                    and not any(name.startswith(d) for d in derived)):
                out[pre + name] = b.detach()
    return out


def _family(config: Any) -> str:
    mt = getattr(config, "model_type", "")
    return _FAMILY.get(mt, mt)


def _uniform(values: dict[str, torch.Tensor], pattern: str, dim: int, what: str
             ) -> int | None:
    sizes = {k: v.shape[dim] for k, v in values.items() if re.search(pattern, k)}
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        raise UnsupportedModelError(
            f"layers have different {what} ({distinct}): a Hugging Face config holds one "
            "value for all layers, so this structurally pruned model cannot be exported "
            "(prune every layer to the same size)")
    return distinct[0] if distinct else None


def structural_config(model: nn.Module, values: dict[str, torch.Tensor]) -> Any:
    """A copy of the model's config with the sizes that pruning changed."""
    config = copy.deepcopy(model.config)
    changed = {}
    for attr, pattern, dim in _SIZE_RULES.get(_family(config), []):
        size = _uniform(values, pattern, dim, attr)
        current = getattr(config, attr, None)
        if attr == "n_inner" and current is None:
            current = 4 * config.n_embd
        if size is not None and size != current:
            setattr(config, attr, size)
            changed[attr] = size
    if _family(config) == "llama":
        head_dim = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads)
        for attr, proj in (("num_attention_heads", "q_proj"), ("num_key_value_heads", "k_proj")):
            size = _uniform(values, rf"\.self_attn\.{proj}\.weight$", 0, attr)
            if size is not None and size // head_dim != getattr(config, attr):
                config.head_dim = head_dim
                setattr(config, attr, size // head_dim)
                changed[attr] = size // head_dim
    layers = {int(m.group(1)) for k in values if (m := _LAYER_KEY.search(k))}
    if layers and len(layers) != config.num_hidden_layers:
        config.num_hidden_layers = len(layers)
        changed["num_hidden_layers"] = len(layers)
    config._mz_changed = changed
    return config


def _untie_if_needed(fresh: nn.Module, values: dict[str, torch.Tensor], config: Any) -> bool:
    """True when embeddings and head are tied in ``config`` but differ in ``values``."""
    if not getattr(config, "tie_word_embeddings", False):
        return False
    inp, out = fresh.get_input_embeddings(), fresh.get_output_embeddings()
    if inp is None or out is None:
        return False
    names = {id(m): n for n, m in fresh.named_modules()}
    a = values.get(f"{names[id(inp)]}.weight")
    b = values.get(f"{names[id(out)]}.weight")
    return a is not None and b is not None and not torch.equal(a, b)


def _fresh(cls: type, config: Any, dtype: torch.dtype) -> nn.Module:
    """``cls(config)`` born in ``dtype``: no fp32 peak for a bf16 twin."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype.is_floating_point else old)
    try:
        return cls(config)
    finally:
        torch.set_default_dtype(old)


def dense_twin(model: nn.Module, dtype: torch.dtype = torch.float32
               ) -> tuple[nn.Module, dict[str, Any]]:
    """A plain transformers model in ``dtype`` holding ``model``'s effective weights, and
    what changed in its config. Every tensor of the twin must be filled (none left at
    random init). float32 by default: dequantized weights are kept exactly."""
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise UnsupportedModelError("save_pretrained needs a Hugging Face (transformers) model")
    values = logical_state(model)
    config = structural_config(model, values)
    changed = dict(config._mz_changed)
    del config._mz_changed
    cls = type(model)
    fresh = _fresh(cls, config, dtype)
    if _untie_if_needed(fresh, values, config):
        config.tie_word_embeddings = False
        changed["tie_word_embeddings"] = False
        fresh = _fresh(cls, config, dtype)
    target = fresh.state_dict()
    missing = [k for k in target if k not in values]
    bad = [k for k in target if k in values and values[k].shape != target[k].shape]
    if missing or bad:
        raise UnsupportedModelError(
            f"cannot map the compressed model onto {cls.__name__}: missing {missing[:4]}, "
            f"shape mismatch {[(k, tuple(values[k].shape)) for k in bad[:4]]}")
    with torch.no_grad():
        for k, t in target.items():
            t.copy_(values[k].to(t.dtype))
    return fresh.eval(), changed


def write_small_files(arch: Any, folder: Path) -> list[str]:
    """The tokenizer / generation files kept in the ``hf`` record, written to ``folder``
    (config.json excepted: the export writes its own). Returns the names written."""
    files = arch.get("files", {}) if isinstance(arch, dict) else {}
    written = []
    for name, b64 in sorted(files.items()):
        if name == "config.json" or "/" in name or name.startswith("."):
            continue
        try:
            (folder / name).write_bytes(base64.b64decode(b64, validate=True))
        except (ValueError, TypeError) as exc:
            raise ModelzipError(f"bad kept file {name!r} in the model record: {exc}") from None
        written.append(name)
    return written


def save_dense(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Write ``model`` as a plain Hugging Face folder (safetensors, fp32 or its dtype)."""
    twin, changed = dense_twin(model)
    twin.save_pretrained(str(folder), safe_serialization=True)
    kept = write_small_files(getattr(model, "_mz_arch", None), folder)
    return {"config_changes": changed, "kept_files": kept, "architecture": type(model).__name__,
            "dense_layers": [], "quantized_layers": {}}
