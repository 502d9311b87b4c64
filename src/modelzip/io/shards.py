"""The weights of a Hugging Face model folder stored as safetensors, read tensor by tensor.

A folder holds ``model.safetensors``, or ``model.safetensors.index.json`` (its
``weight_map``: tensor name -> shard file) and the shards it names. Every shard's header
is read and checked up front (length, JSON, dtypes, shapes, offsets inside the file and
tiling its data), and the index must agree with the shards; tensors are then read on
demand with ``safetensors.safe_open`` (memory-mapped), each shard opened only for the
tensors asked for and closed after, so no mapping stays resident. PyTorch pickles
(``pytorch_model.bin``) are refused: they would have to be unpickled. Every defect is a
:class:`~modelzip.errors.FormatError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..errors import FormatError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
MAX_HEADER = 100 << 20
MAX_INDEX = 64 << 20
DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
          "I32": torch.int32, "I64": torch.int64, "F16": torch.float16,
          "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
           "model.ckpt.index", "flax_model.msgpack")


class Spec(NamedTuple):
    """Where one tensor lies: its shard file, the byte offset and length of its data."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    file: str
    offset: int
    length: int


def _header(path: Path) -> dict[str, Any]:
    """The checked header of one safetensors file: name -> (shape, dtype, begin, end)
    with absolute, in-file offsets that tile the data section."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
            if not 0 < n <= min(MAX_HEADER, size - 8):
                raise FormatError(f"{path.name}: not a safetensors file (bad header length)")
            head = json.loads(f.read(n))
    except OSError as e:
        raise FormatError(f"cannot read {path}: {e}") from None
    except ValueError:
        raise FormatError(f"{path.name}: safetensors header is not valid JSON") from None
    if not isinstance(head, dict):
        raise FormatError(f"{path.name}: safetensors header is not a JSON object")
    head.pop("__metadata__", None)
    out, spans, base = {}, [], 8 + n
    for name, info in head.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path.name}: bad entry for tensor {name!r}") from None
        numel = 1
        for d in shape:
            if d < 0:
                raise FormatError(f"{path.name}: negative dimension in {name!r}")
            numel *= d
        if end - begin != numel * dtype.itemsize or begin < 0 or base + end > size:
            raise FormatError(f"{path.name}: tensor {name!r} lies outside the file or has "
                              "the wrong byte length")
        spans.append((begin, end))
        out[name] = (tuple(shape), dtype, base + begin, end - begin)
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise FormatError(f"{path.name}: tensor data overlap or leave gaps")
        pos = end
    return out


def _index(folder: Path) -> dict[str, str]:
    """The index's weight_map (name -> plain shard file name in ``folder``)."""
    path = folder / INDEX
    try:
        if path.stat().st_size > MAX_INDEX:
            raise FormatError(f"{path} is larger than {MAX_INDEX >> 20} MiB")
        data = json.loads(path.read_text())
    except OSError as e:
        raise FormatError(f"cannot read {path}: {e}") from None
    except ValueError:
        raise FormatError(f"{path} is not valid JSON") from None
    wmap = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wmap, dict) or not wmap:
        raise FormatError(f"{path} has no weight_map")
    for name, file in wmap.items():
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise FormatError(f"{path}: tensor {name!r} maps to a bad shard name {file!r}")
    return wmap


class ShardedWeights:
    """The safetensors weights of the Hugging Face folder ``folder`` (see module doc)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FormatError(f"{self.folder} is not a folder")
        if (self.folder / INDEX).exists():
            wmap = _index(self.folder)
            files = sorted(set(wmap.values()))
        elif (self.folder / SINGLE).exists():
            wmap, files = None, [SINGLE]
        else:
            pickled = [n for n in PICKLES if (self.folder / n).exists()]
            raise FormatError(
                f"{self.folder}: no {SINGLE} or {INDEX}"
                + (f"; {pickled[0]} is a pickle, which modelzip never loads: convert it to "
                   "safetensors first" if pickled else ""))
        self.specs: dict[str, Spec] = {}
        for file in files:
            path = self.folder / file
            if not path.is_file():
                raise FormatError(f"{self.folder}: shard {file} named by the index is missing")
            for name, (shape, dtype, offset, length) in _header(path).items():
                if wmap is not None and wmap.get(name) != file:
                    raise FormatError(f"{file} holds {name!r}, which the index places "
                                      f"{'in ' + wmap[name] if name in wmap else 'nowhere'}")
                self.specs[name] = Spec(shape, dtype, file, offset, length)
        if wmap is not None:
            lost = [n for n in wmap if n not in self.specs]
            if lost:
                raise FormatError(f"shard {wmap[lost[0]]} lacks tensor {lost[0]!r} "
                                  f"(named by the index; {len(lost)} missing in all)")

    def dtype(self) -> torch.dtype | None:
        """The floating-point dtype of the weights (None when there are none or they mix)."""
        found = {s.dtype for s in self.specs.values() if s.dtype.is_floating_point}
        return found.pop() if len(found) == 1 else None

    def load(self, names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names``, read from their shards (each opened once, then closed)."""
        from safetensors import safe_open

        by_file: dict[str, list[str]] = {}
        for name in names:
            if name not in self.specs:
                raise FormatError(f"{self.folder}: no tensor {name!r} in the checkpoint")
            by_file.setdefault(self.specs[name].file, []).append(name)
        out: dict[str, torch.Tensor] = {}
        for file, wanted in by_file.items():
            try:
                with safe_open(str(self.folder / file), framework="pt") as f:
                    for name in wanted:
                        out[name] = f.get_tensor(name)
            except Exception as e:  # OSError, safetensors' own SafetensorError...
                raise FormatError(f"cannot read {file}: {e}") from None
        return out

    def key(self) -> str:
        """sha256 of every tensor's name, shape, dtype and first 512 bytes: identifies the
        weights (in checkpoint keys) without reading them all."""
        h = hashlib.sha256()
        for name in sorted(self.specs):
            shape, dtype, file, offset, length = self.specs[name]
            h.update(f"{name}{shape}{dtype}".encode())
            with open(self.folder / file, "rb") as f:
                f.seek(offset)
                h.update(f.read(min(length, 512)))
        return h.hexdigest()
