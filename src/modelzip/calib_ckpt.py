"""What goes in and out around each block of the block engine: per-block checkpoints of
a calibrated compression run, so a killed run can resume, and block sources.

A folder holds ``progress.json`` (the run's key and the number of finished blocks),
``block_<i>.safetensors`` (what the method computed for block i's layers: codes, scales,
masks...) and ``acts_<0|1>.safetensors`` (the inputs of the next block). Every file is
written to a temporary name and renamed; ``progress.json`` is written last, so a kill at
any moment leaves either the previous or the new consistent state. The key hashes the
config, the calibration data, the model's structure and a sample of its weights: a re-run
with other arguments starts afresh instead of mixing runs.

A :class:`BlockSource` attached to a model with :func:`stream_blocks` gives each block
its weights just before its turn and takes it back when it is final (to write and
release it), so a model held on the meta device is compressed one block at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .batches import split_batch
from .errors import FormatError

VERSION = 1


class BlockSource(Protocol):
    """Where the weights of a model's blocks come from, and where finished blocks go.

    ``load(i, fqn, block)``: give block ``i`` (module ``fqn``) its weights, before its
    turn; ``done(i, fqn, layers, missing)``: block ``i`` is final (``layers``: its
    calibrated layers as the engine knew them, ``missing``: those that never saw an
    input), it may be written and released; ``key()``: identifies the weights in
    checkpoint keys (the blocks' own are not in memory to be sampled).
    """

    def load(self, i: int, fqn: str, block: nn.Module) -> None: ...

    def done(self, i: int, fqn: str, layers: dict[str, nn.Module],
             missing: list[str]) -> None: ...

    def key(self) -> str: ...


SOURCE_ATTR = "_mz_block_source"


@contextlib.contextmanager
def stream_blocks(model: nn.Module, source: BlockSource) -> Iterator[nn.Module]:
    """Within this context, calibrated runs on ``model`` take its blocks from ``source``."""
    setattr(model, SOURCE_ATTR, source)
    try:
        yield model
    finally:
        model.__dict__.pop(SOURCE_ATTR, None)


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for k in sorted(obj):
            yield from _tensors(obj[k])


def _feed(h: Any, t: torch.Tensor, limit: int | None = None) -> None:
    t = t.detach().reshape(-1)
    if limit is not None:
        t = t[:limit]
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.cpu().contiguous().view(torch.uint8).numpy().tobytes())


def run_key(config: dict[str, Any], batches: list[Any], model: torch.nn.Module) -> str:
    """sha256 of (config, calibration data, model structure + a sample of each tensor)."""
    h = hashlib.sha256(json.dumps({"v": VERSION, "cfg": config}, sort_keys=True,
                                  default=str).encode())
    for batch in batches:
        args, kwargs, _ = split_batch(batch)
        for t in _tensors((args, kwargs)):
            _feed(h, t)
    for name, t in model.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.numel() and not t.is_meta:
            _feed(h, t, limit=256)
    return h.hexdigest()


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path,
                 meta: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
              str(tmp), metadata=meta)
    os.replace(tmp, path)


class Checkpoint:
    """The checkpoint folder of one run (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike, key: str):
        self.dir, self.key = Path(folder), key
        self.dir.mkdir(parents=True, exist_ok=True)

    def _progress(self) -> dict[str, Any]:
        p = self.dir / "progress.json"
        if not p.exists():
            return {}
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise FormatError(f"unreadable checkpoint progress file {p}: {e}") from e
        return data if isinstance(data, dict) else {}

    def done(self) -> int:
        """Number of blocks already finished by a run with this key (0: start afresh)."""
        data = self._progress()
        if data.get("key") != self.key or not isinstance(data.get("done"), int):
            return 0
        return max(0, data["done"])

    def save_block(self, i: int, results: dict[str, dict[str, torch.Tensor]]) -> None:
        flat = {f"{fqn}/{name}": t for fqn, parts in results.items()
                for name, t in parts.items()}
        _atomic_save(flat, self.dir / f"block_{i}.safetensors", {"key": self.key})

    def load_block(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        out: dict[str, dict[str, torch.Tensor]] = {}
        for k, t in self._load(f"block_{i}.safetensors").items():
            fqn, _, name = k.rpartition("/")
            out.setdefault(fqn, {})[name] = t
        return out

    def save_acts(self, i: int, hidden: list[torch.Tensor]) -> None:
        """The inputs of block i+1 (one tensor per calibration batch)."""
        _atomic_save({f"h.{b}": t for b, t in enumerate(hidden)},
                     self.dir / f"acts_{i % 2}.safetensors",
                     {"key": self.key, "block": str(i)})

    def load_acts(self, i: int, n: int) -> list[torch.Tensor]:
        data = self._load(f"acts_{i % 2}.safetensors", block=str(i))
        if len(data) != n:
            raise FormatError("checkpoint activations do not match the calibration data")
        return [data[f"h.{b}"] for b in range(n)]

    def commit(self, i: int, total: int) -> None:
        """Record that blocks 0..i are finished (written last)."""
        tmp = self.dir / "progress.json.tmp"
        tmp.write_text(json.dumps({"key": self.key, "done": i + 1, "blocks": total}))
        os.replace(tmp, self.dir / "progress.json")

    def _load(self, name: str, block: str | None = None) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        path = self.dir / name
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            if meta.get("key") != self.key or (block is not None and meta.get("block") != block):
                raise FormatError(f"checkpoint file {path} belongs to another run or block")
            return load_file(str(path))
        except (OSError, ValueError, RuntimeError) as e:
            raise FormatError(f"unreadable checkpoint file {path}: {e}") from e
