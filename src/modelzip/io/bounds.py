"""Allocation bounds of the reader: what a file may make the loader build.

Everything the reader allocates is bounded by what the file really contains and by the
architecture's own parameter count:

* the architecture (and every compressed module class a file names) is first built on
  the ``meta`` device (sizes only, no memory) under :func:`bounded_build`, which counts
  every parameter, buffer and sub-module as it is registered and stops the build as soon
  as it passes the limit, so a record asking for depth 2**31 fails in milliseconds
  instead of looping for minutes;
* its element count must not exceed ``max(MIN_ARCH, ARCH_PER_BYTE * file bytes)``: a
  small file cannot make the loader build a multi-GB model (structured pruning stores far
  fewer values than the recorded, unpruned architecture, hence the generous factor);
* the elements the file's tensors declare must not exceed ``DECLARED_PER_PARAM`` times the
  architecture's (a compressed weight is codes + mask + a small codebook/scales).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..errors import FormatError
from .manifest import check_shape, need

MIN_ARCH, ARCH_PER_BYTE = 1 << 24, 256
MAX_MODULES = 1 << 13
# torch.nn.init functions made no-ops while probing: on the meta device they only cost
# time (each goes through torch's reference implementations, ~1 ms per call)
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "xavier_uniform_",
                   "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "uniform",
                   "normal", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                   "kaiming_normal", "ones_", "zeros_", "orthogonal_", "eye_", "dirac_",
                   "sparse_")
DECLARED_PER_PARAM, DECLARED_SLACK = 3, 1 << 16


def arch_limit(file_bytes: int) -> int:
    """Most elements a model rebuilt from a file of ``file_bytes`` bytes may hold."""
    return max(MIN_ARCH, ARCH_PER_BYTE * file_bytes)


@contextmanager
def bounded_build(limit: int, what: str = "the recorded architecture") -> Iterator[list[int]]:
    """Count the elements and modules registered while the block runs (any thread) and
    raise FormatError once they pass ``limit`` elements or MAX_MODULES modules."""
    count = [0, 0]

    def on_tensor(module: nn.Module, name: str, t: Any) -> None:
        if isinstance(t, torch.Tensor):
            count[0] += t.numel()
            if count[0] > limit:
                raise FormatError(f"{what} does not match the file: it holds over "
                                  f"{limit:,} elements, far more than the file stores")

    def on_module(module: nn.Module, name: str, sub: Any) -> None:
        count[1] += 1
        if count[1] > MAX_MODULES:
            raise FormatError(f"{what} has over {MAX_MODULES:,} modules")

    handles = [torch_module.register_module_parameter_registration_hook(on_tensor),
               torch_module.register_module_buffer_registration_hook(on_tensor),
               torch_module.register_module_module_registration_hook(on_module)]
    saved = {n: getattr(torch.nn.init, n) for n in _INIT_FUNCTIONS if hasattr(torch.nn.init, n)}
    for n in saved:
        setattr(torch.nn.init, n, _skip_init)
    try:
        yield count
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)
        for h in handles:
            h.remove()


def _skip_init(tensor: Any = None, *args: Any, **kwargs: Any) -> Any:
    return tensor


def _skipping_parameters(init: Any) -> Any:
    def init_buffers_only(tensor: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(tensor, nn.Parameter):
            return tensor
        return init(tensor, *args, **kwargs)
    return init_buffers_only


@contextmanager
def parameters_uninitialised() -> Iterator[None]:
    """Build a model whose every parameter the file then overwrites, without drawing
    random initial values for them (the largest cost of loading a Hugging Face model):
    the torch.nn.init functions skip nn.Parameter arguments, and Hugging Face's init
    skips parameters flagged ``_is_hf_initialized`` (as its from_pretrained does). Buffers
    are initialised as usual: non-persistent ones (position ids, rotary tables) are not in
    the file. A parameter the file lacks makes the load fail ("file lacks tensors")."""
    flagged: list[nn.Parameter] = []

    def on_parameter(module: nn.Module, name: str, p: Any) -> None:
        if isinstance(p, nn.Parameter) and not hasattr(p, "_is_hf_initialized"):
            p._is_hf_initialized = True
            flagged.append(p)

    handle = torch_module.register_module_parameter_registration_hook(on_parameter)
    saved = {n: getattr(torch.nn.init, n) for n in _INIT_FUNCTIONS
             if n.endswith("_") and hasattr(torch.nn.init, n)}
    for n, f in saved.items():
        setattr(torch.nn.init, n, _skipping_parameters(f))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)
        handle.remove()
        for p in flagged:
            p.__dict__.pop("_is_hf_initialized", None)


def numel(model: nn.Module) -> int:
    """Elements of every parameter and buffer of ``model`` (works on the meta device)."""
    return sum(t.numel() for t in model.state_dict().values() if isinstance(t, torch.Tensor))


def declared_elements(manifest: dict[str, Any]) -> int:
    """Elements the manifest's tensor entries declare (shapes checked, nothing decoded)."""
    total = 0
    for e in manifest["tensors"]:
        need(isinstance(e, dict), "bad tensor entry")
        total += check_shape(e.get("shape"), e.get("key"))[1]
    return total


def check_declared(manifest: dict[str, Any], arch_elements: int) -> None:
    """Refuse a file whose tensors declare far more elements than the model holds."""
    declared = declared_elements(manifest)
    need(declared <= DECLARED_PER_PARAM * arch_elements + DECLARED_SLACK,
         f"the file declares {declared:,} elements for a model of {arch_elements:,}")
