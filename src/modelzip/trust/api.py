"""``mz.trust(original, compressed, data)``: what compression changed, and for whom.

Both models run on the same batches; the task is detected from the first batch (or given
as ``task=``):

* ``classification`` - logits ``[B, C]`` with integer labels ``[B]``;
* ``language_model`` - logits ``[B, T, V]`` with targets ``[B, T]`` (tuple batches carry
  targets already shifted, as ``mz.data.text`` does; dict batches with ``labels`` follow
  the Hugging Face convention, labels = inputs, and are shifted here);
* ``encoder`` - no labels: the output (``[B, D]``, or ``[B, T, D]`` mean-pooled over the
  ``attention_mask``) is compared by cosine similarity, example by example.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..batches import logits_of, split_batch, take, to_device
from ..errors import ConfigError, ModelzipError, UnsupportedModelError
from . import metrics
from .robustness import robustness as robustness_of

TASKS = ("classification", "language_model", "encoder")


@dataclass
class Outputs:
    """One batch as the metrics need it (on CPU): the main output tensor, the targets
    (None for encoders) and the attention mask (or None)."""

    main: torch.Tensor
    target: torch.Tensor | None
    mask: torch.Tensor | None
    hf_labels: bool = False


def resolve_device(device: Any) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as torch understands it."""
    if device in (None, "auto"):
        return torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                            else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}") from None


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` itself on CPU; a copy moved to ``device`` otherwise (the model given by
    the caller stays where it is)."""
    return model if device.type == "cpu" else copy.deepcopy(model).to(device)


@torch.no_grad()
def run_batch(model: nn.Module, batch: Any, device: torch.device) -> Outputs:
    """Run ``model`` on one batch and bring back what the metrics need."""
    args, kwargs, target = split_batch(batch)
    out = model(*to_device(args, device), **to_device(kwargs, device))
    main = logits_of(out).detach().float().cpu()
    mask = kwargs.get("attention_mask") if isinstance(batch, dict) else None
    return Outputs(main, target.cpu() if isinstance(target, torch.Tensor) else None,
                   mask.cpu() if isinstance(mask, torch.Tensor) else None,
                   isinstance(batch, dict) and "labels" in batch)


def detect_task(o: Outputs) -> str:
    """The task the outputs of one batch describe (see the module docstring)."""
    t, y = o.main, o.target
    if y is None:
        return "encoder"
    if y.dtype.is_floating_point:
        raise ConfigError("float targets: trust() handles classifiers, language models and "
                          "encoders (pass batches without labels for an encoder)")
    if t.dim() == 2 and y.dim() == 1 and y.shape[0] == t.shape[0]:
        return "classification"
    if t.dim() == 3 and tuple(y.shape) == tuple(t.shape[:2]):
        return "language_model"
    raise ConfigError(f"cannot tell the task from output {tuple(t.shape)} and targets "
                      f"{tuple(y.shape)}; pass task= one of {TASKS}")


def pairs(original: nn.Module, compressed: nn.Module, data: Iterable[Any], device: Any,
          max_batches: int | None = None, cache: list[Outputs] | None = None):
    """(original, compressed) outputs batch by batch; ``cache`` holds the original's
    outputs from an earlier pass (filled when empty)."""
    dev = resolve_device(device)
    mo, mc = on_device(original, dev), on_device(compressed, dev)
    modes = (original.training, compressed.training)
    mo.eval()
    mc.eval()
    try:
        for i, batch in enumerate(take(data, max_batches)):
            if cache is not None and i < len(cache):
                out_o = cache[i]
            else:
                out_o = run_batch(mo, batch, dev)
                if cache is not None:
                    cache.append(out_o)
            out_c = run_batch(mc, batch, dev)
            if out_o.target is not None and not torch.equal(out_o.target, out_c.target):
                raise ConfigError("the data changed between passes (a shuffled loader?): "
                                  "use a fixed evaluation set")
            yield out_o, out_c
    finally:
        original.train(modes[0])
        compressed.train(modes[1])


def _lm_view(o: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
    if o.hf_labels:  # Hugging Face: labels are the inputs; position t predicts t + 1
        return o.main[:, :-1], o.target[:, 1:]
    return o.main, o.target


def summarise(task: str, stream: Iterable[tuple[Outputs, Outputs]],
              bins: int = metrics.ECE_BINS) -> dict[str, Any]:
    """The metrics of ``task`` over all (original, compressed) batch pairs."""
    if task == "language_model":
        sums: dict[str, float] = {}
        for o, c in stream:
            (lo, t), (lc, _) = _lm_view(o), _lm_view(c)
            sums = metrics.add_sums(sums, metrics.lm_sums(lo, lc, t))
        return metrics.lm_from_sums(sums)
    if task == "encoder":
        cos = [torch.nn.functional.cosine_similarity(
            metrics.pooled(o.main, o.mask), metrics.pooled(c.main, c.mask), dim=-1)
            for o, c in stream]
        return metrics.cosine_stats(torch.cat(cos))
    lo, lc, y = [], [], []
    for o, c in stream:
        lo.append(o.main)
        lc.append(c.main)
        y.append(o.target)
    return metrics.classification(torch.cat(lo), torch.cat(lc), torch.cat(y), bins=bins)


def compare_outputs(original: nn.Module, compressed: nn.Module, data: Iterable[Any], *,
                    device: Any = "cpu", task: str | None = None,
                    max_batches: int | None = None, cache: list[Outputs] | None = None,
                    bins: int = metrics.ECE_BINS) -> dict[str, Any]:
    """The task metrics only (no robustness): what a compress constraint needs."""
    if task is not None and task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    stream = pairs(original, compressed, data, device, max_batches, cache)
    first = next(stream, None)
    if first is None:
        raise ConfigError("trust() got no batches")
    found = task or detect_task(first[0])

    def chained():
        yield first
        yield from stream

    return summarise(found, chained(), bins)


def trust(original: nn.Module, compressed: nn.Module, data: Iterable[Any], *,
          device: Any = "cpu", task: str | None = None, robustness: bool = True,
          noise_sigmas: Iterable[float] = (0.1, 0.3), eps: Iterable[float] = (0.01, 0.03),
          pgd_steps: int = 10, robust_samples: int | None = 1000,
          bounds: tuple[float, float] | None = None, max_batches: int | None = None,
          bins: int = metrics.ECE_BINS) -> dict[str, Any]:
    """What compression changed, and for whom (see the module docstring for tasks).

    Classifiers: per-class accuracy and drop, worst class, top-1 agreement, per-class flip
    rates, ECE and its change, mean KL(original || compressed), the confusion-change
    matrix; with ``robustness=True`` also accuracy under Gaussian noise (``noise_sigmas``)
    and FGSM / PGD (``eps``, in model-input units, ``pgd_steps``; 0 skips PGD) for both
    models on the first ``robust_samples`` examples. Language models: per-token agreement,
    KL and perplexity. Encoders: the cosine distribution. ``device`` is where the work
    runs ("cpu", "cuda", "auto"); the models given stay where they are.
    """
    for m in (original, compressed):
        if not isinstance(m, nn.Module):
            raise ModelzipError(f"trust() needs two nn.Modules, got {type(m).__name__}")
    out = compare_outputs(original, compressed, data, device=device, task=task,
                          max_batches=max_batches, bins=bins)
    if robustness and out["task"] == "classification":
        dev = resolve_device(device)
        kw = {"sigmas": tuple(noise_sigmas), "eps": tuple(eps), "pgd_steps": pgd_steps,
              "samples": robust_samples, "bounds": bounds, "device": dev}
        try:
            out["robustness"] = {
                "original": robustness_of(on_device(original, dev), data, **kw),
                "compressed": robustness_of(on_device(compressed, dev), data, **kw)}
        except UnsupportedModelError as exc:  # e.g. token inputs: no input gradient
            out["robustness"] = {"skipped": str(exc)}
    return out
