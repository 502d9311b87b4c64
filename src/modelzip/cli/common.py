"""Helpers shared by the subcommands: JSON output, dataset and model resolution."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from torch import nn

from .. import data as mzdata
from .. import zoo
from ..errors import ModelzipError

DATASETS = ("digits", "fashion-mnist", "mnist", "shakespeare")


def add_json(p: Any) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")


def emit(args: Any, payload: dict[str, Any], table: Table | None = None) -> None:
    """Print ``payload`` as JSON (--json) or ``table`` / key: value lines for humans."""
    if getattr(args, "json", False):
        json.dump(payload, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif table is not None:
        Console(width=max(Console().width, 130)).print(table)
    else:
        for k, v in payload.items():
            print(f"{k}: {v}")


def load_dataset(name: str, root: str | None = None, **kw: Any) -> mzdata.Split:
    """A built-in dataset by name, or an IDX folder / text file by path."""
    if name == "digits":
        return mzdata.digits(**kw)
    if name == "fashion-mnist":
        return mzdata.fashion_mnist(root=root, **kw)
    if name == "mnist":
        return mzdata.mnist(root=root, **kw)
    if name in ("shakespeare", "tinyshakespeare"):
        return mzdata.text(None, **kw)
    p = Path(name)
    if p.is_dir():
        raise ModelzipError(f"--data {name} is a folder: give one of {', '.join(DATASETS)} "
                            "or a text file (an IDX folder goes in --data-root)")
    if p.is_file():
        try:
            return mzdata.text(p, **kw)
        except UnicodeDecodeError as exc:
            raise ModelzipError(f"--data {name} is not a UTF-8 text file "
                                f"(offset {exc.start})") from None
    raise ModelzipError(f"unknown dataset '{name}'; use one of {', '.join(DATASETS)} "
                        "or a path to a text file")


def zoo_for_data(name: str, split: mzdata.Split) -> nn.Module:
    """Zoo model ``name`` shaped for the inputs of ``split``."""
    meta = mzdata.info(split)
    if name == "tiny_gpt":
        if "vocab_size" not in meta:
            raise ModelzipError("tiny_gpt needs a text dataset")
        return zoo.build(name, vocab_size=meta["vocab_size"], seq_len=meta["seq_len"])
    shape = meta.get("input_shape")
    if shape is None:
        raise ModelzipError(f"model '{name}' needs an image dataset")
    c, h, w = shape
    if name == "lenet5":
        return zoo.build(name, in_channels=c, image_size=h, num_classes=meta["num_classes"])
    return zoo.build(name, in_features=c * h * w, num_classes=meta["num_classes"])
