"""Turn a sample of a search space into an ordinary ``nn.Module`` that records its
architecture (``model._mz_arch = {"kind": "nas", "space": ..., "sample": ...}``), so that
``mz.save`` / ``mz.load(path)`` rebuild it with no model given."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError, FormatError
from ..zoo.models import TinyGPT
from .space import SearchSpace

_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh,
                                     "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    return _ACTS[name]()


def conv_plan(space: SearchSpace, depth: int) -> list[tuple[bool, int]]:
    """(pooled?, spatial size after) of each conv stage: 2x2 max-pooling after the first
    ``pools`` stages while the image is at least 2 pixels wide."""
    size = space.fixed["input_shape"][1]
    out = []
    for i in range(depth):
        pool = i < space.fixed["pools"] and size >= 2
        size = size // 2 if pool else size
        out.append((pool, size))
    return out


def _mlp(space: SearchSpace, s: dict[str, Any]) -> nn.Module:
    c, h, w = space.fixed["input_shape"]
    layers: list[nn.Module] = [nn.Flatten()]
    width = c * h * w
    for i in range(s["depth"]):
        out = space.layer_value(s, "width", i)
        layers += [nn.Linear(width, out), activation(s["activation"])]
        width = out
    layers.append(nn.Linear(width, space.fixed["num_classes"]))
    return nn.Sequential(*layers)


def _cnn(space: SearchSpace, s: dict[str, Any]) -> nn.Module:
    chans = space.fixed["input_shape"][0]
    layers: list[nn.Module] = []
    plan = conv_plan(space, s["depth"])
    for i, (pool, _) in enumerate(plan):
        out, k = space.layer_value(s, "channels", i), space.layer_value(s, "kernel", i)
        layers.append(nn.Conv2d(chans, out, k, padding=k // 2))
        if s["batchnorm"]:
            layers.append(nn.BatchNorm2d(out))
        layers.append(activation(s["activation"]))
        if pool:
            layers.append(nn.MaxPool2d(2))
        chans = out
    size = plan[-1][1]
    if s["head"] == "gap":  # global average pooling: the classifier sees one value a channel
        layers.append(nn.AdaptiveAvgPool2d(1))
        size = 1
    layers += [nn.Flatten(), nn.Linear(chans * size * size, s["hidden"]),
               activation(s["activation"]),
               nn.Linear(s["hidden"], space.fixed["num_classes"])]
    return nn.Sequential(*layers)


def _tiny_gpt(space: SearchSpace, s: dict[str, Any]) -> nn.Module:
    model = TinyGPT(space.fixed["vocab_size"], space.fixed["seq_len"], s["d_model"],
                    s["n_layer"], s["n_head"], s["ffn_mult"] * s["d_model"])
    for block in model.blocks:
        block.mlp.act = activation(s["activation"])
    return model


_FAMILY = {"mlp": _mlp, "cnn": _cnn, "tiny_gpt": _tiny_gpt}


def build(space: SearchSpace | dict[str, Any], sample: dict[str, Any]) -> nn.Module:
    """The model of ``sample`` (an ordinary nn.Module with an architecture record)."""
    space = SearchSpace.from_dict(space)
    space.require_fixed()
    s = space.normalise(sample)
    model = _FAMILY[space.family](space, s)
    model._mz_arch = {"kind": "nas", "space": space.to_dict(), "sample": s}
    return model


def from_record(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a searched architecture from the record stored in a .mzip file (the ``nas``
    kind of modelzip.io.arch's table)."""
    if set(arch) != {"kind", "space", "sample"}:
        raise FormatError("bad nas architecture record: needs exactly kind, space, sample")
    try:
        space = SearchSpace.from_dict(arch["space"])
        space.require_fixed()
        space.normalise(arch["sample"], error=FormatError)
        return build(space, arch["sample"])
    except ConfigError as exc:
        raise FormatError(f"bad nas architecture record: {exc}") from None

