"""Writing a .mzip while the model is still being compressed: parts of the model (a
finished transformer block, say) are encoded as soon as they are final and can then be
released from memory; :meth:`IncrementalWriter.finish` encodes what is left and writes
the file. The file is byte for byte what :func:`modelzip.io.writer.save` writes for the
finished model, so the format (docs/format.md) is unchanged.

How: every stream goes to an anonymous staging file (``tempfile.TemporaryFile``: gone
with the process, even on SIGKILL) as it is encoded; ``finish`` puts the manifest
entries in the state-dict order of the whole model, renumbers their streams in that
order and copies the streams' bytes, in that order, into the output's temp file after
the header, then the manifest; the temp file is renamed over the output. The disk holds
the file twice meanwhile, memory holds one stream at a time.

``entropy="auto"`` depends on the size of the whole model's tensors, not known while
parts arrive: streams are held (encoded later) while the tensors seen so far take at
most ``AUTO_EXHAUSTIVE_BYTES`` (16 MiB); past that the fast path is chosen and the held
ones are encoded with it; a model that never passes it gets the exhaustive search at
``finish``, as :func:`save` does.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ModelzipError, UnsupportedModelError, WriteError
from . import safetensors_io as stio
from .arch import record_of
from .manifest import DTYPE_NAMES, FORMAT, VERSION, check_json_bounds, seal
from .writer import (
    AUTO_EXHAUSTIVE_BYTES,
    RECORD_SECTIONS,
    StreamWriter,
    encode_tensor,
    entropy_plan,
    has_state_hooks,
    module_record,
    module_states,
)

_COPY_CHUNK = 8 << 20


class _Staged(StreamWriter):
    """A StreamWriter whose streams go to a staging file, each one's place recorded; with
    ``auto`` the coder plan waits for the tensors' total size (see the module doc)."""

    def __init__(self, entropy: str | tuple[str, ...] | None, fd: int):
        self.fd, self.spans, self.end = fd, {}, 0
        self.undecided = entropy == "auto"
        super().__init__(None if self.undecided else entropy_plan(entropy, 0), self._put)
        self.held: dict[int, tuple[np.ndarray, int, str]] = {}
        self.seen = 0  # bytes of the tensors encoded so far (as save() counts them)
        self._index = -1

    def count(self, nbytes: int) -> None:
        self.seen += nbytes
        if self.undecided and self.seen > AUTO_EXHAUSTIVE_BYTES:
            self.decide(entropy_plan("fast", 0))

    def decide(self, plan: tuple[str, ...] | None) -> None:
        """Fix the coder plan and encode the streams held until now."""
        self.entropy, self.undecided = plan, False
        for i in sorted(self.held):
            self._store(i, *self.held.pop(i))

    def add(self, symbols: np.ndarray, bits: int, kind: str = "int") -> int:
        self.table.append(None)
        i = len(self.table) - 1
        symbols = np.asarray(symbols).ravel()
        if self.undecided:
            self.held[i] = (symbols.copy(), bits, kind)
        else:
            self._store(i, symbols, bits, kind)
        return i

    def _store(self, i: int, symbols: np.ndarray, bits: int, kind: str) -> None:
        row, data = self.encode(symbols, bits, kind)
        self.table[i], self._index = row, i
        self.sink(data)
        self.length += len(data)

    def _put(self, data: bytes) -> None:
        stio.write_all(self.fd, data)
        self.spans[self._index] = (self.end, len(data))
        self.end += len(data)


class IncrementalWriter:
    """A .mzip written part by part: :meth:`add` encodes a finished subtree of the model,
    :meth:`finish` the rest and writes ``path`` atomically (see the module doc).

    ``entropy``, ``half``, ``info``: as for :func:`modelzip.save`.
    """

    def __init__(self, path: str | os.PathLike, *, entropy: str | tuple[str, ...] = "auto",
                 half: bool = False, info: dict[str, Any] | None = None):
        self.path, self.half, self.info = Path(path), half, info
        if info:
            check_json_bounds(info, "info")
        folder = self.path.parent if str(self.path.parent) else Path(".")
        if not folder.is_dir():
            raise WriteError(f"cannot write {self.path}: folder {folder} does not exist")
        self._file = tempfile.TemporaryFile(dir=folder)
        self.streams = _Staged(entropy, self._file.fileno())
        self.entries: dict[str, list[dict[str, Any]]] = {}   # module fqn -> its entries
        self.records: dict[str, dict[str, Any]] = {}         # module fqn -> its records

    def add(self, model: nn.Module, prefix: str) -> None:
        """Encode module ``prefix`` of ``model`` and everything below it, now: they must
        not change any more (they may be released afterwards)."""
        if has_state_hooks(model):
            raise UnsupportedModelError("a module of this model has state-dict hooks: it "
                                        "cannot be written part by part")
        sub = model.get_submodule(prefix)
        dot = f"{prefix}." if prefix else ""
        params = {dot + k for k, _ in sub.named_parameters()}
        for name, m in sub.named_modules(remove_duplicate=False):
            self._encode_module(model, dot + name if name else prefix, m, params)

    def _encode_module(self, model: nn.Module, fqn: str, m: nn.Module,
                       params: set[str]) -> None:
        if fqn in self.entries:
            return
        out = []
        for key, t in module_states(fqn, m):
            if not isinstance(t, torch.Tensor) or t.dtype not in DTYPE_NAMES:
                raise ModelzipError(f"cannot store {key} of type "
                                    f"{getattr(t, 'dtype', type(t))}")
            if t.is_meta:
                raise ModelzipError(f"{key} has no values (meta tensor) when written")
            self.streams.count(t.numel() * t.element_size())
            out.append(encode_tensor(self.streams, model, key, t, key in params, self.half))
        self.entries[fqn] = out
        self.records[fqn] = module_record(m)

    def finish(self, model: nn.Module) -> int:
        """Encode the modules not added yet, write the file; returns its size in bytes."""
        try:
            self.add(model, "")
            if self.streams.undecided:
                self.streams.decide(entropy_plan("best", 0))
            entries, order = self._ordered(model)
            manifest = {"format": FORMAT, "version": VERSION, "arch": record_of(model),
                        "streams": [self.streams.table[i] for i in order],
                        "tensors": entries, **self._sections(model)}
            if self.info:
                manifest["info"] = self.info
            packed, meta = seal(manifest)
            length = sum(self.streams.spans[i][1] for i in order)
            head = stio.header({"data": length, "manifest": len(packed)}, meta)
            with stio.atomic_file(self.path) as fd:
                stio.write_all(fd, head)
                for i in order:
                    _copy(self._file.fileno(), fd, *self.streams.spans[i])
                stio.write_all(fd, packed)
            return len(head) + length + len(packed)
        finally:
            self.close()

    def close(self) -> None:
        """Drop the staging file (also when the run fails)."""
        self._file.close()

    def _ordered(self, model: nn.Module) -> tuple[list[dict[str, Any]], list[int]]:
        """Entries in the model's state-dict order with their streams renumbered in that
        order; ``order[k]``: the staging index of the new stream k."""
        entries: list[dict[str, Any]] = []
        order: list[int] = []
        for fqn, _ in model.named_modules(remove_duplicate=False):
            for entry in self.entries[fqn]:
                entries.append(_renumber(entry, order))
        return entries, order

    def _sections(self, model: nn.Module) -> dict[str, Any]:
        records: dict[str, dict[str, Any]] = {k: {} for k in RECORD_SECTIONS}
        for fqn, _ in model.named_modules():
            for section, value in self.records[fqn].items():
                records[section][fqn] = value
        return {k: v for k, v in records.items() if v}


def _renumber(entry: dict[str, Any], order: list[int]) -> dict[str, Any]:
    """A copy of ``entry`` whose stream indices (``data``, nested ``values.data``) are the
    next ones of the file, in the order they appear (that of :func:`writer.save`)."""
    out = dict(entry)
    if "values" in out:
        out["values"] = _renumber(out["values"], order)
    if "data" in out:
        order.append(out["data"])
        out["data"] = len(order) - 1
    return out


def _copy(src: int, dst: int, offset: int, length: int) -> None:
    """Append ``length`` bytes at ``offset`` of file ``src`` to file ``dst``, in chunks."""
    done = 0
    while done < length:
        chunk = os.pread(src, min(_COPY_CHUNK, length - done), offset + done)
        if not chunk:
            raise OSError("staging file shorter than what was written to it")
        stio.write_all(dst, chunk)
        done += len(chunk)
