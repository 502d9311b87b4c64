"""What the structured-pruning analysis knows about modules and ops.

* ``Attention``: a model-aware rule for multi-head attention with separate q/k/v/out
  projections (modelzip's ``TinyGPT`` attention, and any module with the same shape): the
  module is a leaf of the trace; its input feeds q/k/v, its output comes from the out
  projection; whole heads are removed by slicing q/k/v rows and out-projection columns.
* Op tables: functions and tensor methods that keep the channel layout, that combine two
  tensors element-wise, or that reduce/reshape it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Attention:
    """Names of an attention module's parts and head-count attributes."""

    q: str = "q"
    k: str = "k"
    v: str = "v"
    out: str = "proj"
    n_head: str = "n_head"
    head_dim: str = "head_dim"

    def matches(self, m: nn.Module) -> bool:
        return all(isinstance(getattr(m, a, None), nn.Linear)
                   for a in (self.q, self.k, self.v, self.out)) and all(
            isinstance(getattr(m, a, None), int) for a in (self.n_head, self.head_dim))

    def projections(self, m: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
        return tuple(getattr(m, a) for a in (self.q, self.k, self.v, self.out))  # type: ignore


attention_rule = Attention()


class Rules:
    """The rule set used by one analysis (extendable with more attention layouts)."""

    def __init__(self, attention: tuple[Attention, ...] = (attention_rule,)):
        self._attention = attention

    def attention(self, m: nn.Module) -> Attention | None:
        for rule in self._attention:
            if rule.matches(m):
                return rule
        return None


# modules whose output has the input's channel layout
PASS_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                nn.Hardsigmoid, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Softplus, nn.PReLU,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.MaxPool1d,
                nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
                nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.ZeroPad2d)

_UNARY = {F.relu, F.relu6, F.gelu, F.silu, F.sigmoid, F.tanh, F.hardswish, F.leaky_relu,
          F.elu, F.dropout, F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
          F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.relu,
          torch.sigmoid, torch.tanh, torch.neg, torch.abs, torch.exp, F.mish, F.softplus,
          operator.neg, torch.clamp, torch.clip}
_UNARY_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "to", "detach",
                  "type_as", "neg", "abs", "exp", "clamp", "clip", "relu_", "sigmoid_",
                  "half", "double", "bfloat16"}
_BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
           operator.isub, operator.imul, torch.add, torch.sub, torch.mul, torch.div,
           torch.maximum, torch.minimum}
_BINARY_METHODS = {"add", "sub", "mul", "div", "add_", "mul_", "sub_", "maximum", "minimum"}
_CAT = {torch.cat, torch.concat}
_FLATTEN = {torch.flatten, torch.reshape}
_RESHAPE_METHODS = {"flatten", "view", "reshape"}
_REDUCE = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_PERMUTE_METHODS = {"permute", "transpose"}
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax}
_SOFTMAX_METHODS = {"softmax", "log_softmax"}
_SHAPE_METHODS = {"size", "dim"}


def op_kind(target: object, is_method: bool) -> str:
    """How an fx call_function/call_method target treats channels."""
    for kind, fns, methods in (
            ("unary", _UNARY, _UNARY_METHODS), ("binary", _BINARY, _BINARY_METHODS),
            ("cat", _CAT, set()), ("reshape", _FLATTEN, _RESHAPE_METHODS),
            ("reduce", _REDUCE, _REDUCE_METHODS), ("permute", {torch.permute, torch.transpose},
                                                    _PERMUTE_METHODS),
            ("softmax", _SOFTMAX, _SOFTMAX_METHODS), ("shape", {getattr}, _SHAPE_METHODS)):
        if (target in methods) if is_method else (target in fns):
            return kind
    if not is_method and target is operator.getitem:
        return "getitem"
    return "unknown"
