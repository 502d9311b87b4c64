"""Where modelzip computes: ``device="cpu" | "cuda" | "auto"`` (or a torch.device).

The model stays on the CPU; calibrated methods move one block at a time to the device,
compute there, and move it back (see :mod:`modelzip.blockwise`).
"""

from __future__ import annotations

from typing import Any

import torch

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
