"""The Deep Compression pipeline (Han, Mao & Dally, ICLR 2016): prune, share, Huffman-code.

1. **Prune** iteratively (cubic sparsity ramp, fine-tuning after each step) to
   ``sparsity``: a float ranks all selected weights globally (large layers lose more,
   like the paper's per-layer choices), a dict gives each layer (fqn) its own target.
2. **Quantize by weight sharing**: k-means per layer over the kept weights, 2**conv_bits
   clusters for convolutions and 2**fc_bits for the rest (paper: 8 and 5), then
   fine-tune the centroids (pruned weights stay zero).
3. **Huffman-code** on save: ``mz.save`` keeps the smallest coder per stream, canonical
   Huffman for the cluster indices and the relative sparse indices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from .clustering import Cluster
from .distill import Distillation, distill
from .errors import ConfigError
from .io.mzip import save
from .pruning import Magnitude, cubic_schedule
from .select import weight_layers
from .train import finetune
from .verbs import cluster, prune

CONV = ("Conv1d", "Conv2d")


def _prune_step(model: nn.Module, sparsity: float | dict[str, float], frac: float) -> None:
    if isinstance(sparsity, dict):
        for fqn, s in sparsity.items():
            prune(model, Magnitude(sparsity=s * frac, targets=[fqn]))
    else:
        prune(model, Magnitude(sparsity=sparsity * frac, scope="global"))


def _recover(model: nn.Module, data: Iterable[Any], teacher: nn.Module | None,
             temperature: float, alpha: float, **kw: Any) -> None:
    """Fine-tune; with a ``teacher``, by distillation (``mz.distill``: alpha weights the
    soft targets at temperature T, 1 - alpha the hard labels)."""
    if teacher is None:
        finetune(model, data, **kw)
        return
    distill(model, teacher, data, Distillation(temperature=temperature, alpha=alpha), **kw)


def _check(sparsity: Any, steps: int, conv_bits: int, fc_bits: int) -> None:
    values = sparsity.values() if isinstance(sparsity, dict) else [sparsity]
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1:
            raise ConfigError(f"deep_compression: sparsity must be in [0, 1), got {s!r}")
    for name, v, lo, hi in (("steps", steps, 1, 100), ("conv_bits", conv_bits, 1, 16),
                            ("fc_bits", fc_bits, 1, 16)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"deep_compression: {name} must be an int in [{lo}, {hi}]")


def deep_compression(model: nn.Module, train_data: Iterable[Any], *,
                     evaluate: Callable[[nn.Module], float] | None = None,
                     sparsity: float | dict[str, float] = 0.92, steps: int = 4,
                     prune_epochs: float = 1.0, prune_lr: float = 1e-3,
                     recover_epochs: float = 0.0, weight_decay: float = 0.0,
                     teacher: nn.Module | None = None, temperature: float = 4.0,
                     alpha: float = 0.5,
                     conv_bits: int = 8, fc_bits: int = 5, cluster_epochs: float = 1.0,
                     cluster_lr: float = 1e-4, init: str = "linear",
                     path: str | os.PathLike | None = None, progress: bool = True,
                     on_stage: Callable[[str, nn.Module], Any] | None = None
                     ) -> dict[str, Any]:
    """Run the three stages in place on ``model``; returns ``{"model", "history"}``.

    ``history`` holds one record per stage (``stage``, ``metric`` when ``evaluate`` is
    given, and ``file_bytes`` for the saved file when ``path`` is given).
    ``recover_epochs`` adds one longer fine-tune (cosine-decayed from ``prune_lr``)
    after the last pruning step; ``weight_decay`` (AdamW) regularises the pruning
    fine-tunes. With a ``teacher`` (e.g. a copy of the dense model) every fine-tune
    distills from it (``temperature``, ``alpha``): small models that overfit plain
    fine-tuning recover better. ``on_stage(name, model)`` is called after pruning
    ("pruned") and after the centroid fine-tune ("clustered"), e.g. to save each stage.
    """
    _check(sparsity, steps, conv_bits, fc_bits)
    history: list[dict[str, Any]] = []

    def record(stage: str, **kw: Any) -> None:
        rec = {"stage": stage, **kw}
        if evaluate is not None:
            rec["metric"] = float(evaluate(model))
        history.append(rec)

    record("baseline")
    for i, s in enumerate(cubic_schedule(1.0, steps)):
        _prune_step(model, sparsity, s)
        _recover(model, train_data, teacher, temperature, alpha, epochs=prune_epochs,
                 lr=prune_lr, progress=progress, weight_decay=weight_decay)
        record(f"prune {i + 1}/{steps}", fraction_of_target=s)
    if recover_epochs > 0:  # a longer decaying-lr recovery once the final masks are set
        _recover(model, train_data, teacher, temperature, alpha, epochs=recover_epochs,
                 lr=prune_lr, progress=progress, weight_decay=weight_decay)
        record("recover")
    if on_stage is not None:
        on_stage("pruned", model)
    conv = [f for f, _ in weight_layers(model, Cluster(targets=list(CONV)))]
    if conv:
        cluster(model, Cluster(clusters=1 << conv_bits, init=init, targets=list(CONV)))
    cluster(model, Cluster(clusters=1 << fc_bits, init=init, ignore=[f"re:{f}" for f in conv]))
    record("cluster")
    _recover(model, train_data, teacher, temperature, alpha, epochs=cluster_epochs,
             lr=cluster_lr, progress=progress)
    record("cluster + fine-tune")
    if on_stage is not None:
        on_stage("clustered", model)
    if path is not None:
        history[-1]["file_bytes"] = save(model, path)
    return {"model": model, "history": history}
