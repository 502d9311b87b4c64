"""Where modelzip computes: ``device="cpu" | "cuda" | "auto"`` (or a torch.device).

The model stays on the CPU; calibrated methods move one block at a time to the device,
compute there, and move it back (see :mod:`modelzip.blockwise`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .errors import ConfigError


def resolve_device(device: Any = "cpu") -> torch.device:
    """A torch.device for ``device``; "auto" picks CUDA when available.

    A CUDA device that is absent is a :class:`ConfigError`, not a silent CPU fallback.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'auto'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was requested but CUDA is not available "
                              "here (torch built without CUDA or no GPU); use 'cpu' or "
                              "'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                              "device(s) present")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported: use 'cpu', 'cuda' or 'auto'")
    return dev


def module_device(module: nn.Module) -> torch.device:
    """Where ``module``'s first parameter (or buffer) lives; CPU for an empty module."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")


@contextmanager
def placed(device: Any, *modules: nn.Module) -> Iterator[torch.device | None]:
    """Run the ``with`` body with ``modules`` on ``device`` and move each back to where it
    was afterwards (also on error). ``device=None`` leaves them where they are (yields
    None). Models live on the CPU between steps; training and evaluation borrow the
    device for their duration."""
    if device is None:
        yield None
        return
    dev = resolve_device(device)
    homes = [module_device(m) for m in modules]
    try:
        for m in modules:
            m.to(dev)
        yield dev
    finally:
        for m, home in zip(modules, homes, strict=True):
            m.to(home)
