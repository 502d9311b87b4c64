"""Where the parts of Hugging Face transformer blocks live, and how to cut them.

Families: BERT-like encoders (``query/key/value`` + ``attention.output.dense``,
``intermediate.dense`` / ``output.dense``), GPT-2 (fused ``c_attn`` Conv1D with weight
``[in, out]``, ``c_proj``, ``mlp.c_fc`` / ``mlp.c_proj``) and the Llama family
(``q/k/v/o_proj`` with grouped KV heads, ``gate/up/down_proj``). Cuts are physical: rows
and columns leave the weights, the modules' size attributes and the model config follow.

Config fields written: ``num_hidden_layers``; Llama ``num_attention_heads``,
``num_key_value_heads``, ``head_dim``, ``intermediate_size``; BERT ``intermediate_size``;
GPT-2 ``n_inner``; when the standard fields cannot express the shapes (BERT/GPT-2 fewer
heads at the original head size, or layers that differ) ``mz_layers``: one
``{"heads", "kv_heads", "head_dim", "intermediate"}`` per block, applied by
:func:`restore_structure` when the model is rebuilt from its config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedModelError

FAMILIES = {"bert": "bert", "roberta": "bert", "gpt2": "gpt2", "llama": "llama",
            "mistral": "llama", "qwen2": "llama", "qwen3": "llama"}


def family(model: nn.Module) -> str | None:
    """"bert", "gpt2", "llama", "tiny" (modelzip's zoo TinyGPT) or None."""
    if type(model).__name__ == "TinyGPT":
        return "tiny"
    cfg = getattr(model, "config", None)
    return FAMILIES.get(getattr(cfg, "model_type", None)) if cfg is not None else None


def block_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute, ModuleList) holding the transformer blocks."""
    fam = family(model)
    if fam == "tiny":
        return model, "blocks", model.blocks
    base = getattr(model, "base_model", model)
    parent, attr = {"bert": (getattr(base, "encoder", None), "layer"),
                    "gpt2": (base, "h"), "llama": (base, "layers")}.get(fam, (None, ""))
    blocks = getattr(parent, attr, None)
    if not isinstance(blocks, nn.ModuleList):
        raise UnsupportedModelError(
            "transformer pruning knows BERT, GPT-2 and Llama-family Hugging Face models")
    return parent, attr, blocks


# ------------------------------------------------------------------ Linear / Conv1D
def _is_conv1d(m: nn.Module) -> bool:
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and hasattr(m, "nx")


def _plain_weight(m: nn.Module) -> torch.Tensor:
    w = m._parameters.get("weight")
    if w is None:
        raise UnsupportedModelError(
            f"{type(m).__name__} has no plain weight (quantized?): prune before quantizing")
    return w


def out_rows(m: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in]`` (a view; Conv1D stores ``[in, out]``)."""
    w = _plain_weight(m).detach()
    return w.t() if _is_conv1d(m) else w


def _take(m: nn.Module, name: str, dim: int, idx: torch.Tensor) -> None:
    for store in (m._parameters, m._buffers):
        t = store.get(name)
        if t is not None:
            new = t.detach().index_select(dim, idx.to(t.device)).clone()
            store[name] = nn.Parameter(new, t.requires_grad) if store is m._parameters else new


def keep_out(m: nn.Module, idx: torch.Tensor) -> None:
    """Keep output channels ``idx`` of a Linear / Conv1D (weight, mask, bias)."""
    _plain_weight(m)
    dim = 1 if _is_conv1d(m) else 0
    for name in ("weight", "weight_mask"):
        _take(m, name, dim, idx)
    for name in ("bias", "bias_mask"):
        _take(m, name, 0, idx)
    if _is_conv1d(m):
        m.nf = int(idx.numel())
    else:
        m.out_features = int(idx.numel())


def keep_in(m: nn.Module, idx: torch.Tensor) -> None:
    """Keep input channels ``idx`` of a Linear / Conv1D."""
    _plain_weight(m)
    dim = 0 if _is_conv1d(m) else 1
    for name in ("weight", "weight_mask"):
        _take(m, name, dim, idx)
    if _is_conv1d(m):
        m.nx = int(idx.numel())
    else:
        m.in_features = int(idx.numel())


# ------------------------------------------------------------------ block parts
@dataclass
class Attn:
    """One block's attention: query producers, key/value producers (module, offset of
    the channel range in its outputs), the consumer of the heads and the head counts."""

    module: nn.Module
    q: list[tuple[nn.Module, int]]
    kv: list[tuple[nn.Module, int]]
    out: nn.Module
    heads: int
    kv_heads: int
    head_dim: int


@dataclass
class Mlp:
    """One block's MLP: the layers producing the hidden neurons and their consumer."""

    up: list[nn.Module]
    down: nn.Module
    size: int


def attention(fam: str, block: nn.Module) -> Attn:
    if fam == "tiny":
        a = block.attn
        return Attn(a, [(a.q, 0)], [(a.k, 0), (a.v, 0)], a.proj, a.n_head, a.n_head,
                    a.head_dim)
    if fam == "bert":
        a = block.attention.self
        hd = a.attention_head_size
        n = a.query.out_features // hd
        return Attn(a, [(a.query, 0)], [(a.key, 0), (a.value, 0)],
                    block.attention.output.dense, n, n, hd)
    if fam == "gpt2":
        a = block.attn
        s, hd = a.split_size, a.head_dim
        return Attn(a, [(a.c_attn, 0)], [(a.c_attn, s), (a.c_attn, 2 * s)], a.c_proj,
                    s // hd, s // hd, hd)
    a = block.self_attn
    hd = a.head_dim
    return Attn(a, [(a.q_proj, 0)], [(a.k_proj, 0), (a.v_proj, 0)], a.o_proj,
                a.q_proj.out_features // hd, a.k_proj.out_features // hd, hd)


def mlp(fam: str, block: nn.Module) -> Mlp:
    if fam == "tiny":
        return Mlp([block.mlp.fc], block.mlp.proj, block.mlp.fc.out_features)
    if fam == "bert":
        return Mlp([block.intermediate.dense], block.output.dense,
                   block.intermediate.dense.out_features)
    if fam == "gpt2":
        return Mlp([block.mlp.c_fc], block.mlp.c_proj, block.mlp.c_fc.nf)
    m = block.mlp
    return Mlp([m.gate_proj, m.up_proj], m.down_proj, m.up_proj.out_features)


def channels(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)


def cut_heads(fam: str, block: nn.Module, q_heads: torch.Tensor,
              kv_heads: torch.Tensor) -> None:
    """Keep query heads ``q_heads`` and key/value heads ``kv_heads`` (sorted indices)."""
    at = attention(fam, block)
    qc, kc = channels(q_heads, at.head_dim), channels(kv_heads, at.head_dim)
    per_module: dict[int, tuple[nn.Module, list[torch.Tensor]]] = {}
    for entries, chans in ((at.q, qc), (at.kv, kc)):
        for mod, offset in entries:
            per_module.setdefault(id(mod), (mod, []))[1].append(chans + offset)
    for mod, parts in per_module.values():
        keep_out(mod, torch.cat(parts))
    keep_in(at.out, qc)
    h, kv = int(q_heads.numel()), int(kv_heads.numel())
    a = at.module
    if fam == "tiny":  # its extra state records n_head for the file
        a.n_head = h
    elif fam == "bert":
        a.num_attention_heads, a.all_head_size = h, h * at.head_dim
    elif fam == "gpt2":
        a.num_heads, a.split_size = h, h * at.head_dim
    else:
        a.num_key_value_groups = h // kv
        for name, value in (("num_heads", h), ("num_attention_heads", h),
                            ("num_key_value_heads", kv)):
            if hasattr(a, name):
                setattr(a, name, value)


def cut_neurons(fam: str, block: nn.Module, keep: torch.Tensor) -> None:
    part = mlp(fam, block)
    for m in part.up:
        keep_out(m, keep)
    keep_in(part.down, keep)


def shapes(fam: str, blocks: nn.ModuleList) -> list[dict[str, int]]:
    """Per block: heads, kv_heads, head_dim, intermediate."""
    out = []
    for b in blocks:
        at = attention(fam, b)
        out.append({"heads": at.heads, "kv_heads": at.kv_heads, "head_dim": at.head_dim,
                    "intermediate": mlp(fam, b).size})
    return out


def update_config(model: nn.Module) -> None:
    """Write the blocks' shapes into ``model.config`` (and the recorded architecture)."""
    fam = family(model)
    _, _, blocks = block_list(model)
    arch = getattr(model, "_mz_arch", None)
    if fam == "tiny":  # sizes travel as layer attributes and extra state; depth as n_layer
        if isinstance(arch, dict) and isinstance(arch.get("kwargs"), dict):
            arch["kwargs"]["n_layer"] = len(blocks)
        return
    cfg = model.config
    per = shapes(fam, blocks)
    cfg.num_hidden_layers = len(blocks)
    uniform = all(p == per[0] for p in per)
    record = not uniform
    if per and uniform:
        p = per[0]
        if fam == "llama":
            cfg.num_attention_heads, cfg.num_key_value_heads = p["heads"], p["kv_heads"]
            cfg.head_dim, cfg.intermediate_size = p["head_dim"], p["intermediate"]
        else:
            setattr(cfg, "n_inner" if fam == "gpt2" else "intermediate_size", p["intermediate"])
            record = p["heads"] * p["head_dim"] != cfg.hidden_size
    if record:
        cfg.mz_layers = per
    elif hasattr(cfg, "mz_layers"):
        del cfg.mz_layers
    if isinstance(arch, dict) and arch.get("kind") == "hf":
        arch["config"] = cfg.to_dict()


def restore_structure(model: nn.Module) -> nn.Module:
    """Shape a model freshly built from a pruned config (``mz_layers``) like the pruned
    one, so that its stored tensors load. A model without the record is left alone."""
    fam = family(model)
    per = getattr(getattr(model, "config", None), "mz_layers", None)
    if fam is None or not per:
        return model
    _, _, blocks = block_list(model)
    if not isinstance(per, list) or len(per) != len(blocks):
        raise UnsupportedModelError("config mz_layers does not match the model's blocks")
    with torch.no_grad():
        for block, p in zip(blocks, per):
            at = attention(fam, block)
            if (at.heads, at.kv_heads) != (p["heads"], p["kv_heads"]):
                cut_heads(fam, block, torch.arange(p["heads"]), torch.arange(p["kv_heads"]))
            if mlp(fam, block).size != p["intermediate"]:
                cut_neurons(fam, block, torch.arange(p["intermediate"]))
    return model


def remove_blocks(model: nn.Module, drop: list[int]) -> None:
    """Delete blocks ``drop`` (indices); renumber ``layer_idx`` and update the config."""
    parent, attr, blocks = block_list(model)
    keep = [i for i in range(len(blocks)) if i not in set(drop)]
    if not keep:
        raise UnsupportedModelError("depth pruning must keep at least one block")
    cfg: Any = getattr(model, "config", None)
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        raise UnsupportedModelError("GPT-2 with scale_attn_by_inverse_layer_idx ties "
                                    "each block to its depth; depth pruning would change it")
    setattr(parent, attr, nn.ModuleList([blocks[i] for i in keep]))
    for new, block in enumerate(getattr(parent, attr)):
        for m in block.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = new
    for name in ("layer_types", "mz_layers"):
        seq = getattr(cfg, name, None)
        if isinstance(seq, list) and len(seq) == len(blocks):
            setattr(cfg, name, [seq[i] for i in keep])
    update_config(model)
