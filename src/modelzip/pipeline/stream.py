"""Compress a Hugging Face model stored as safetensors without ever loading it whole.

``compress_pretrained(folder, out, config, calib_data)`` builds the model from its
config.json with every parameter on the meta device, reads the weights outside the
transformer blocks (embeddings, final norm, LM head) from the shards, and runs the
calibrated method through the block engine (:mod:`modelzip.blockwise`) with a block
source: each block gets its weights from the shards just before its turn, in the
checkpoint's own dtype, and once it is final (solved, installed, packed) its tensors are
encoded into the output and it goes back to the meta device. Memory thus holds the
non-block weights, one block, the calibration activations and the output's stream
table; the file is byte for byte what ``mz.save`` writes after the same method ran on
the whole model in memory (see docs/large-models.md). ``checkpoint_dir`` resumes a
killed run at the next block.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..calib import find_blocks
from ..calib_ckpt import stream_blocks
from ..config import Config
from ..errors import ConfigError, FormatError, UnsupportedModelError
from ..io.hf import empty_pretrained
from ..io.incremental import IncrementalWriter
from ..io.shards import ShardedWeights
from ..pruning import SparseGPT, Wanda
from ..quantization import WeightOnly
from ..quantization.packed_convert import pack_model
from ..select import weight_layers
from ..verbs import apply
from .recipe import Recipe

log = logging.getLogger("modelzip.stream")
Finish = Callable[[nn.Module, list[str], list[str]], None]


def compress_pretrained(src: str | os.PathLike, out: str | os.PathLike,
                        config: Config | Recipe | str, calib_data: Iterable[Any], *,
                        device: Any = "cpu", checkpoint_dir: Any = None,
                        auto_class: str = "AutoModelForCausalLM",
                        entropy: str | tuple[str, ...] = "auto",
                        info: dict[str, Any] | None = None) -> int:
    """Compress the safetensors model in folder ``src`` block by block into ``out``.

    ``config``: a calibrated config (``WeightOnly(method="gptq"|"awq")``, ``SparseGPT``,
    ``Wanda``) or a one-stage recipe (object, name or YAML path) holding one. Returns the
    file's size in bytes; ``mz.load(out)`` rebuilds the model. ``device``,
    ``checkpoint_dir``: as for :func:`modelzip.quantize`; ``entropy``, ``info``: as for
    :func:`modelzip.save`.
    """
    cfg = _one_config(config)
    weights = ShardedWeights(src)
    model = empty_pretrained(src, auto_class, weights.dtype())
    source = _Source(model, weights, _finisher(model, cfg))
    source.fill(source.outside)
    log.info("weights outside the blocks read: %d tensors", len(source.outside))
    writer = IncrementalWriter(out, entropy=entropy, info=info)
    source.writer = writer
    try:
        with stream_blocks(model, source):
            apply(model, cfg, calib_data=calib_data, device=device,
                  checkpoint_dir=checkpoint_dir)
        if source.written != len(source.blocks):
            raise UnsupportedModelError(f"{cfg.kind} never went through the model's blocks")
        return writer.finish(model)
    finally:
        writer.close()


def _one_config(config: Config | Recipe | str) -> Config:
    if isinstance(config, Config):
        return config
    recipe = Recipe.load(config)
    stages = [s for s in recipe.stages if isinstance(s, Config)]
    if len(stages) != 1 or len(recipe.stages) != 1:
        raise ConfigError(f"recipe '{recipe.name}' has {len(recipe.stages)} stages: a "
                          "streamed run applies one calibrated config")
    return stages[0]


def _finisher(model: nn.Module, cfg: Config) -> Finish:
    """What turns a block's calibrated layers into their final form before it is written
    (what the method's verb does to them after the engine, on the whole model)."""
    if isinstance(cfg, WeightOnly) and cfg.method in ("gptq", "awq"):
        prefixes = tuple(f"{p}." for p, _ in find_blocks(model))
        for fqn, m in weight_layers(model, cfg):
            if fqn.startswith(prefixes) and not isinstance(m, nn.Linear):
                raise UnsupportedModelError(f"{fqn} ({type(m).__name__}) would get RTN after "
                                            "the run: only Linear layers stream")

        def finish(model: nn.Module, fqns: list[str], missing: list[str]) -> None:
            if missing:
                raise UnsupportedModelError(f"layer {missing[0]} never ran on the calibration "
                                            "data: it cannot be quantized block by block")
            if cfg.packed:
                pack_model(model, fqns)

        return finish
    if isinstance(cfg, (SparseGPT, Wanda)):
        return lambda model, fqns, missing: None
    raise UnsupportedModelError(
        f"{type(cfg).__name__}{'(method=' + cfg.method + ')' if hasattr(cfg, 'method') else ''}"
        " cannot be streamed: give WeightOnly(method='gptq'|'awq'), SparseGPT or Wanda")


class _Source:
    """The block source of one run: weights from the shards, finished blocks to the
    writer, then back to the meta device."""

    def __init__(self, model: nn.Module, weights: ShardedWeights, finish: Finish):
        self.model, self.weights, self.finish = model, weights, finish
        self.writer: IncrementalWriter | None = None
        self.written = 0
        self.blocks = find_blocks(model)
        if self.blocks[0][0] == "":
            raise UnsupportedModelError("no transformer blocks found: this model cannot be "
                                        "compressed block by block")
        self.groups = _tensor_groups(model, weights)
        prefixes = tuple(f"{p}." for p, _ in self.blocks)
        self.outside = [g for g in self.groups if not g[0].startswith(prefixes)]

    def key(self) -> str:
        return self.weights.key()

    def fill(self, groups: list[list[str]]) -> None:
        """Give every key of ``groups`` its tensor from the shards (tied keys share it)."""
        loaded = self.weights.load(next(k for k in g if k in self.weights.specs)
                                   for g in groups)
        for group in groups:
            t = next(loaded[k] for k in group if k in loaded)
            for key in group:
                _put(self.model, key, t)

    def load(self, i: int, fqn: str, block: nn.Module) -> None:
        self.fill([g for g in self.groups if g[0].startswith(f"{fqn}.")])

    def done(self, i: int, fqn: str, layers: dict[str, nn.Module],
             missing: list[str]) -> None:
        self.finish(self.model, list(layers), missing)
        self.writer.add(self.model, fqn)
        for m in [self.model.get_submodule(fqn), *layers.values()]:
            _to_meta(m)
        self.written += 1
        _trim()


def _trim() -> None:
    """Hand the heap memory freed by a released block back to the OS (glibc keeps freed
    chunks below its growing mmap threshold in the heap, where RSS keeps counting them)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _tensor_groups(model: nn.Module, weights: ShardedWeights) -> list[list[str]]:
    """The model's state keys grouped by tensor (tied weights share one), each checked
    against the checkpoint: present under one of its keys, same shape, same dtype."""
    by_id: dict[int, list[str]] = {}
    for key, t in model.state_dict(keep_vars=True).items():
        if isinstance(t, torch.Tensor) and not key.endswith("_extra_state"):
            by_id.setdefault(id(t), []).append(key)
    state = model.state_dict(keep_vars=True)
    for keys in by_id.values():
        have = [k for k in keys if k in weights.specs]
        if not have:
            raise FormatError(f"{weights.folder}: the checkpoint lacks tensor {keys[0]!r} "
                              "(no shard holds it)")
        spec, want = weights.specs[have[0]], state[keys[0]]
        if spec.shape != tuple(want.shape) or spec.dtype != want.dtype:
            raise FormatError(
                f"{weights.folder}: {have[0]} is {list(spec.shape)} "
                f"{str(spec.dtype).removeprefix('torch.')} in {spec.file}, the config says "
                f"{list(want.shape)} {str(want.dtype).removeprefix('torch.')}")
    return list(by_id.values())


def _put(model: nn.Module, key: str, t: torch.Tensor) -> None:
    fqn, _, name = key.rpartition(".")
    m = model.get_submodule(fqn)
    if name in m._parameters:
        m._parameters[name] = nn.Parameter(t, requires_grad=m._parameters[name].requires_grad)
    else:
        m._buffers[name] = t


def _to_meta(module: nn.Module) -> None:
    """Release every tensor of ``module`` (shapes and dtypes kept on the meta device)."""
    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None and not p.is_meta:
                m._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
        for name, b in m._buffers.items():
            if b is not None and not b.is_meta:
                m._buffers[name] = b.to("meta")


__all__ = ["compress_pretrained"]
