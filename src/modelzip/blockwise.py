"""Sequential block engine: calibrate and compress a model one transformer block at a time.

The inputs of block 0 (positional and keyword arguments: hidden states, attention mask,
position embeddings...) are captured once by a forward pre-hook that stops the forward.
Then for every block: move it to ``device``, run it over the cached inputs while hooks
accumulate statistics of its layers' inputs (layers fed the same tensor - q/k/v,
gate/up - share one accumulator), let the method solve and install each layer, run the
compressed block again to produce the next block's inputs, and move it back to the CPU.
Each block thus runs twice over the calibration data; activations stay on the CPU in the
model's dtype, one batch at a time goes to the device. Layers outside the blocks (an LM
head) are calibrated by one last pass in which the blocks replay their cached outputs.

With ``checkpoint_dir`` every finished block is saved (see :mod:`modelzip.calib_ckpt`);
a re-run with the same arguments resumes at the next block and gives the same tensors
bit for bit. Under ``torch.distributed`` each rank takes every world-th batch and the
statistics are all-reduced before each solve, so all ranks compute the same model.
A ``calib_ckpt.BlockSource`` on the model loads each block before its turn and takes it
back when final (see :mod:`modelzip.pipeline.stream`).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .batches import forward, to_device
from .calib import find_blocks, world
from .calib_ckpt import SOURCE_ATTR, BlockSource, Checkpoint, run_key
from .devices import resolve_device
from .errors import DataError, UnsupportedModelError
from .state import materialize, reparams

log = logging.getLogger("modelzip.blockwise")
Results = dict[str, torch.Tensor]


@dataclass
class Method:
    """What a calibrated method plugs into the engine.

    ``new_stats(layer)``: an accumulator with ``add(x)`` and ``all_reduce(device)``;
    ``solve(fqn, layer, stats)``: the tensors to install (computed on the layer's device);
    ``install(fqn, layer, results)``: put them in place (also used when resuming).
    """

    new_stats: Callable[[nn.Module], Any]
    solve: Callable[[str, nn.Module, Any], Results]
    install: Callable[[str, nn.Module, Results], None]


class _Stop(Exception):
    """Raised by the capture hook to end the forward pass at block 0."""


@dataclass
class _Inputs:
    hidden: list[torch.Tensor]   # per batch, CPU, the model's dtype
    rest: list[tuple[tuple, dict[str, Any], bool]]  # other args, kwargs, hidden-in-kwargs
    tuple_out: bool = False


@contextlib.contextmanager
def _calibration_mode(model: nn.Module) -> Iterator[None]:
    """eval(), no grad, and no KV cache (Hugging Face ``config.use_cache``) meanwhile."""
    cfg = getattr(model, "config", None)
    cache = getattr(cfg, "use_cache", None)
    training = model.training
    model.eval()
    if cache is not None:
        cfg.use_cache = False
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)
        if cache is not None:
            cfg.use_cache = cache


def _capture(model: nn.Module, block: nn.Module, batches: list[Any]) -> _Inputs:
    """Block 0's arguments for every batch (one forward of the layers before it)."""
    inputs = _Inputs([], [])

    def hook(mod: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if args:
            h, rest, in_kw = args[0], args[1:], False
        elif "hidden_states" in kwargs:
            h, in_kw = kwargs["hidden_states"], True
            rest, kwargs = (), {k: v for k, v in kwargs.items() if k != "hidden_states"}
        else:
            raise UnsupportedModelError("cannot find the hidden states given to block 0")
        inputs.hidden.append(h.detach().cpu())
        inputs.rest.append((to_device(rest, "cpu"), to_device(kwargs, "cpu"), in_kw))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                forward(model, batch)
            except _Stop:
                continue
            raise UnsupportedModelError("the model's forward never called its first block")
    finally:
        handle.remove()
    return inputs


def _call(block: nn.Module, inputs: _Inputs, b: int, dev: torch.device) -> torch.Tensor:
    """Run ``block`` on batch ``b``'s cached inputs; its output hidden states."""
    rest, kwargs, in_kw = inputs.rest[b]
    h = inputs.hidden[b].to(dev)
    kwargs = to_device(kwargs, dev)
    if in_kw:
        out = block(*to_device(rest, dev), hidden_states=h, **kwargs)
    else:
        out = block(h, *to_device(rest, dev), **kwargs)
    if isinstance(out, (tuple, list)):
        inputs.tuple_out = True
        out = out[0]
    return out


def _gather(block: nn.Module, layers: dict[str, nn.Module], method: Method,
            run: Callable[[dict], None]) -> tuple[dict[str, Any], dict[str, str]]:
    """Statistics of ``layers``' inputs while ``run()`` drives ``block``; layers fed the
    very same tensor share the accumulator of the first one (``owner``)."""
    stats: dict[str, Any] = {}
    owner: dict[str, str] = {}
    live: dict[tuple, tuple[torch.Tensor, str]] = {}  # holds tensors: no address reuse

    def make(fqn: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple) -> None:
            x = args[0]
            key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x._version)
            hit = live.get(key)
            if hit is not None and hit[1] != fqn:
                owner.setdefault(fqn, hit[1])
                return
            live[key] = (x, fqn)
            if fqn not in stats:
                stats[fqn] = method.new_stats(mod)
            stats[fqn].add(x)
        return hook

    handles = [m.register_forward_pre_hook(make(f)) for f, m in layers.items()]
    try:
        run(live)
    finally:
        for h in handles:
            h.remove()
    return stats, owner


def _solve(layers: dict[str, nn.Module], method: Method, stats: dict[str, Any],
           owner: dict[str, str], dev: torch.device) -> tuple[dict[str, Results], list[str]]:
    """All-reduce the statistics (ranks), solve and install every layer."""
    for k in sorted(stats):
        stats[k].all_reduce(dev)
        if hasattr(stats[k], "finish"):
            stats[k].finish()
    results: dict[str, Results] = {}
    missing = []
    for fqn, layer in layers.items():
        st = stats.get(owner.get(fqn, fqn))
        if st is None:
            missing.append(fqn)
            continue
        results[fqn] = method.solve(fqn, layer, st)
        method.install(fqn, layer, results[fqn])
    return results, missing


def _do_block(block: nn.Module, inputs: _Inputs, layers: dict[str, nn.Module],
              method: Method, dev: torch.device, propagate: bool
              ) -> tuple[dict[str, Results], list[str]]:
    """Calibrate, compress and (when ``propagate``) re-run one block on ``dev``."""
    block.to(dev)
    try:
        def run(live: dict) -> None:
            for b in range(len(inputs.hidden)):
                _call(block, inputs, b, dev)
                live.clear()

        stats, owner = _gather(block, layers, method, run)
        results, missing = _solve(layers, method, stats, owner, dev)
        del stats
        if propagate:
            _next_inputs(block, inputs, dev)
    finally:
        block.to("cpu")
        release(block)
    return results, missing


def release(module: nn.Module) -> None:
    """Drop the dequantized weights cached on re-parametrised layers of a finished block:
    only the codes stay in memory while later blocks run (rebuilt on the next forward,
    and for good by :func:`rebuild` at the end of the run)."""
    for _, m, name, _ in reparams(module):
        m.__dict__.pop(name, None)


def rebuild(model: nn.Module) -> None:
    """Materialize the weights that :func:`release` dropped (``module.weight`` works)."""
    with torch.no_grad():
        for _, m, name, _ in reparams(model):
            if any(t.is_meta for t in m.buffers(recurse=False)):
                continue  # a block already written and released by a BlockSource
            if name not in m.__dict__:
                m.__dict__[name] = materialize(m, name)


class _Replay(nn.Module):
    """Stands in for a block in the final pass: the first returns the last block's cached
    outputs, the others pass their input through (same output structure as a block)."""

    def __init__(self, outputs: list[torch.Tensor] | None, tuple_out: bool):
        super().__init__()
        self.outputs, self.tuple_out, self.i = outputs, tuple_out, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.outputs is not None:
            h, self.i = self.outputs[self.i], self.i + 1
        else:
            h = args[0] if args else kwargs["hidden_states"]
        return (h,) if self.tuple_out else h


def _tail(model: nn.Module, blocks: list[tuple[str, nn.Module]], inputs: _Inputs,
          batches: list[Any], layers: dict[str, nn.Module], method: Method
          ) -> list[str]:
    """Calibrate the layers outside the blocks in one pass where blocks replay (CPU)."""
    parent_name = blocks[0][0].rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    originals = list(parent)
    for i in range(len(originals)):
        parent[i] = _Replay(inputs.hidden if i == 0 else None, inputs.tuple_out)
    try:
        return _whole(model, batches, layers, method, torch.device("cpu"))
    finally:
        for i, blk in enumerate(originals):
            parent[i] = blk


def _whole(model: nn.Module, batches: list[Any], layers: dict[str, nn.Module],
           method: Method, dev: torch.device) -> list[str]:
    """A model without blocks is one block: one pass, on ``dev``."""
    model.to(dev)
    try:
        def run(live: dict) -> None:
            for batch in batches:
                forward(model, batch, dev)
                live.clear()

        stats, owner = _gather(model, layers, method, run)
        return _solve(layers, method, stats, owner, dev)[1]
    finally:
        model.to("cpu")


def _shard(batches: list[Any]) -> list[Any]:
    rank, size = world()
    if size == 1:
        return batches
    if len(batches) < size:
        raise DataError(f"{len(batches)} calibration batches cannot be shared by {size} "
                        "ranks: give every rank at least one")
    return batches[rank::size]


def run(model: nn.Module, data: Iterable[Any], layers: dict[str, nn.Module],
        method: Method, *, device: Any = "cpu", checkpoint_dir: Any = None,
        config: dict[str, Any] | None = None, rebuild_weights: bool = True) -> list[str]:
    """Calibrate and compress ``layers`` (fqn -> module of ``model``) block by block.

    Returns the fqns of layers that never saw an input (left to the caller).
    ``config`` (JSON-able) identifies the run in checkpoints. ``rebuild_weights=False``
    leaves finished layers holding only their codes (for a caller that packs them next).
    """
    if data is None:
        raise DataError("this method needs calib_data (an iterable of batches)")
    dev = resolve_device(device)
    batches = list(data)
    if not batches:
        raise DataError("calibration data yielded no batch")
    mine = _shard(batches)
    blocks = find_blocks(model)
    source = getattr(model, SOURCE_ATTR, None)
    with _calibration_mode(model):
        if blocks[0][0] == "":
            if source is not None:
                raise UnsupportedModelError("no transformer blocks found: this model "
                                            "cannot be compressed block by block")
            return _whole(model, mine, layers, method, dev)
        ckpt = None
        if checkpoint_dir is not None:
            rank, size = world()
            cfg = {"method": config or {}, "ranks": [rank, size]}
            key = run_key({**cfg, "source": source.key()} if source else cfg, batches, model)
            folder = checkpoint_dir if size == 1 else f"{checkpoint_dir}/rank{rank}"
            ckpt = Checkpoint(folder, key)
        try:
            missing = _blocks(model, blocks, mine, layers, method, dev, ckpt, source)
        finally:
            if rebuild_weights:
                rebuild(model)
    if missing:
        warnings.warn(f"{len(missing)} layer(s) never ran on the calibration data: "
                      f"{missing[:3]}...", stacklevel=2)
    return missing


def _blocks(model: nn.Module, blocks: list[tuple[str, nn.Module]], batches: list[Any],
            layers: dict[str, nn.Module], method: Method, dev: torch.device,
            ckpt: Checkpoint | None, source: BlockSource | None) -> list[str]:
    def inside(fqn: str, prefix: str) -> bool:
        return fqn == prefix or fqn.startswith(prefix + ".")

    per_block = [{f: m for f, m in layers.items() if inside(f, p)} for p, _ in blocks]
    leftover = {f: m for f, m in layers.items() if not any(inside(f, p) for p, _ in blocks)}
    start, last = (min(ckpt.done(), len(blocks)) if ckpt else 0), len(blocks) - 1
    rerun = start > last and bool(leftover)  # the tail needs the last block's outputs
    missing = _resumed(blocks, per_block, method, ckpt, source, start, keep_last=rerun)
    if start > last and not leftover:
        return missing
    inputs = _capture(model, blocks[0][1], batches)
    if min(start, last):  # acts are saved after every block but the last
        inputs.hidden = ckpt.load_acts(min(start, last) - 1, len(batches))
    log.info("starting at block %d of %d", start, len(blocks))
    for i in range(start, len(blocks)):
        t0 = time.perf_counter()
        if source is not None:
            source.load(i, blocks[i][0], blocks[i][1])
        results, miss = _do_block(blocks[i][1], inputs, per_block[i], method, dev,
                                  propagate=i < last or bool(leftover))
        missing += miss
        if ckpt is not None:
            ckpt.save_block(i, results)
            if i < last:
                ckpt.save_acts(i, inputs.hidden)
            ckpt.commit(i, len(blocks))
        del results
        if source is not None:
            source.done(i, blocks[i][0], per_block[i], miss)
        log.info("block %d/%d %s: %.2f s", i + 1, len(blocks), blocks[i][0],
                 time.perf_counter() - t0)
    if leftover:
        if rerun:
            inputs = _rerun_last(blocks, inputs, dev)
            if source is not None:
                source.done(last, blocks[last][0], per_block[last],
                            [f for f in per_block[last] if f in missing])
        missing += _tail(model, blocks, inputs, batches, leftover, method)
    return missing


def _resumed(blocks: list[tuple[str, nn.Module]], per_block: list[dict[str, nn.Module]],
             method: Method, ckpt: Checkpoint | None, source: BlockSource | None,
             start: int, keep_last: bool) -> list[str]:
    """Install the first ``start`` blocks from the checkpoint; returns their layers that
    have no results (missing). A source loads each block and takes it back (``keep_last``:
    not the last one)."""
    missing: list[str] = []
    for i in range(start):
        if source is not None:
            source.load(i, blocks[i][0], blocks[i][1])
        done = ckpt.load_block(i)
        for fqn, res in done.items():
            method.install(fqn, per_block[i][fqn], res)
        release(blocks[i][1])
        miss = [f for f in per_block[i] if f not in done]
        missing += miss
        if source is not None and not (keep_last and i == len(blocks) - 1):
            source.done(i, blocks[i][0], per_block[i], miss)
    return missing


def _next_inputs(block: nn.Module, inputs: _Inputs, dev: torch.device) -> _Inputs:
    """Replace the cached inputs by ``block``'s outputs (the block already on ``dev``)."""
    inputs.hidden = [_call(block, inputs, b, dev).cpu() for b in range(len(inputs.hidden))]
    return inputs


def _rerun_last(blocks: list[tuple[str, nn.Module]], inputs: _Inputs,
                dev: torch.device) -> _Inputs:
    """Outputs of the last block from its saved inputs (a resume after all blocks)."""
    block = blocks[-1][1].to(dev)
    try:
        return _next_inputs(block, inputs, dev)
    finally:
        block.to("cpu")
