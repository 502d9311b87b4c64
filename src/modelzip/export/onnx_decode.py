"""A causal LM's decode step with past key/values, as an ONNX graph.

``export_onnx(model, path, prompt, decode=True)``: ``prompt`` is a dict with
``input_ids`` (and ``attention_mask``) as for the plain export. The prompt is run once in
torch to get real past keys/values; the exported graph is one decode step: inputs
``input_ids`` [batch, sequence] (the new tokens), ``attention_mask`` [batch, past +
sequence], ``past_key_<i>`` / ``past_value_<i>`` [batch, heads, past, head_dim]; outputs
``logits`` [batch, sequence, vocab] and ``present_key_<i>`` / ``present_value_<i>``
[batch, heads, past + sequence, head_dim]; batch, sequence and past lengths are dynamic.
Inside, the past tensors are put into a transformers ``DynamicCache`` and the model runs
with ``use_cache=True``: the graph is transformers' own decode step.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..errors import ModelzipError


def _flat(cache: Any) -> list[torch.Tensor]:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ModelzipError("decode export needs a transformers cache with .layers "
                            "(transformers >= 5)")
    out: list[torch.Tensor] = []
    for layer in layers:
        out += [layer.keys, layer.values]
    return out


def _cache(past: tuple[torch.Tensor, ...]) -> Any:
    from transformers import DynamicCache

    cache = DynamicCache()
    for i in range(len(past) // 2):
        cache.update(past[2 * i], past[2 * i + 1], i)
    return cache


def cache_kwarg(model: nn.Module) -> str:
    """The forward keyword for the cache: ``cache`` in newer transformers, else
    ``past_key_values`` (deprecated there)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    got = getattr(out, "cache", None)
    return got if got is not None else out.past_key_values


def step(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
         past: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """One decode step: (logits, present key/value tensors, flat)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                **{cache_kwarg(model): _cache(past)}, use_cache=True)
    return (out.logits, *_flat(output_cache(out)))


def past_names(n_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(n_layers) for kind in ("key", "value")]


def decode_example(model: nn.Module, prompt: Any) -> tuple[list[str], tuple]:
    """(input names, tensors) of one decode step after ``prompt``: two new tokens (the
    prompt's argmax, twice), the mask grown by two, and the prompt's real past
    keys/values."""
    if not (isinstance(prompt, dict) and "input_ids" in prompt):
        raise ModelzipError("decode=True needs example inputs as a dict with input_ids "
                            "(a Hugging Face causal LM prompt)")
    ids = prompt["input_ids"]
    mask = prompt.get("attention_mask", torch.ones_like(ids))
    try:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            past = [t.clone() for t in _flat(output_cache(out))]
    except ModelzipError:
        raise
    except Exception as exc:  # not a transformers causal LM: many error types
        raise ModelzipError("decode=True needs a Hugging Face causal LM that returns "
                            f"past_key_values: {str(exc).splitlines()[0][:200]}") from None
    # two new tokens, not one: traced with one, some models' graphs (Llama's rotary
    # embedding) broadcast a length-1 axis and then refuse other lengths
    nxt = out.logits[:, -1:].argmax(-1).repeat(1, 2)
    mask = torch.cat([mask, torch.ones_like(mask[:, :2])], dim=1)
    names = ["input_ids", "attention_mask"] + past_names(len(past) // 2, "past")
    return names, (nxt, mask, *past)


def decode_axes(names: list[str]) -> tuple[list[str], dict[str, dict[int, str]]]:
    """Output names and dynamic axes of the decode graph with inputs ``names``."""
    n = (len(names) - 2) // 2
    outs = ["logits"] + past_names(n, "present")
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "sequence"},
                                       "attention_mask": {0: "batch", 1: "total"},
                                       "logits": {0: "batch", 1: "sequence"}}
    axes.update({k: {0: "batch", 2: "past"} for k in names[2:]})
    axes.update({k: {0: "batch", 2: "total"} for k in outs[1:]})
    return outs, axes
