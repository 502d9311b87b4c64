"""Channel-dependency analysis for structured pruning, built from a torch.fx trace.

Every tensor in the traced graph carries a *layout* of its channel dimension: a list of
segments, each a run of the channels of one *space* (a set of channels that must be
pruned together), where every channel may span ``expand`` consecutive features (a conv
channel flattened into a Linear spans H*W inputs). Layers that create channels (Linear and
Conv outputs) open a new space; pass-through ops (activations, BatchNorm, pooling,
dropout) keep the layout; additions and multiplications merge spaces (the channels coupled
across a residual skip); concatenation joins layouts; flatten/view expand them. The model's
inputs and outputs, embeddings and anything the analysis cannot follow are *pinned*.

Modules that fx cannot trace are handled hierarchically: inside a traceable parent they
become opaque leaves (and the channels they consume are reported), and their own children
are analysed separately with their boundaries pinned. When the root itself cannot be traced
(e.g. a forward with data-dependent Python control flow) every child is analysed on its own.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .rules import Rules, attention_rule
from .spaces import Graph, Layout, Value, flat_shape_expand
from .walk import walk


# ============================================================================ tracing
class _Tracer(fx.Tracer):
    """fx tracer that treats rule-handled and known-untraceable modules as leaves and
    remembers the innermost module whose tracing failed."""

    def __init__(self, rules: Rules, opaque: set[int]):
        super().__init__()
        self.rules, self.opaque, self.failed = rules, opaque, None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (id(m) in self.opaque or self.rules.attention(m) is not None
                or super().is_leaf_module(m, qualname))

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed is None:
                self.failed = m
            raise


def trace(module: nn.Module, rules: Rules) -> tuple[fx.GraphModule | None, set[int], str]:
    """(graph module or None, ids of modules made opaque, failure message)."""
    opaque: set[int] = set()
    message = ""
    for _ in range(sum(1 for _ in module.modules()) + 1):
        tracer = _Tracer(rules, opaque)
        try:
            graph = tracer.trace(module)
            return fx.GraphModule(module, graph), opaque, message
        except Exception as exc:  # noqa: BLE001 - any tracing failure is handled the same
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if tracer.failed is None or tracer.failed is module or id(tracer.failed) in opaque:
                return None, opaque, message
            opaque.add(id(tracer.failed))
    return None, opaque, message


def capture_calls(model: nn.Module, example: Any) -> dict[int, tuple[tuple, dict]]:
    """Inputs of every module's first call during one forward pass on ``example``."""
    calls: dict[int, tuple[tuple, dict]] = {}

    def hook(m: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.setdefault(id(m), (args, kwargs))

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example, dict):
                model(**example)
            elif isinstance(example, (tuple, list)):
                model(*example)
            else:
                model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls


def _shapes(gm: fx.GraphModule, module: nn.Module, call: tuple[tuple, dict]) -> None:
    """Run ``gm`` on the recorded inputs, storing every node's output shape in its meta."""
    args, kwargs = call
    try:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        flat = list(bound.arguments.values())
    except TypeError:
        flat = list(args)

    class _Rec(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            n.meta["mz_shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            return out

    with torch.no_grad():
        _Rec(gm).run(*flat[: sum(1 for n in gm.graph.nodes if n.op == "placeholder")])


def analyse(model: nn.Module, example: Any, rules: Rules | None = None) -> Graph:
    """The channel-dependency graph of ``model`` for one ``example`` input."""
    rules = rules or Rules()
    calls = capture_calls(model, example)
    g = Graph()
    names = {id(m): f for f, m in model.named_modules()}
    _visit(model, "", calls, g, rules, names)
    return g


def _visit(module: nn.Module, fqn: str, calls: dict, g: Graph, rules: Rules,
           names: dict[int, str]) -> None:
    def children() -> None:
        for name, child in module.named_children():
            _visit(child, f"{fqn}.{name}" if fqn else name, calls, g, rules, names)

    if id(module) not in calls:  # containers (ModuleList) and modules never called
        children()
        return
    gm, opaque, message = trace(module, rules)
    if gm is None:
        children()
        return
    try:
        _shapes(gm, module, calls[id(module)])
    except Exception:  # noqa: BLE001 - shapes unavailable: analyse the parts instead
        children()
        return
    walk(gm, fqn, g, rules, opaque, message)
    for m in module.modules():
        if id(m) in opaque:
            _visit_inside(m, names[id(m)], calls, g, rules, names)


def _visit_inside(module: nn.Module, fqn: str, calls: dict, g: Graph, rules: Rules,
                  names: dict[int, str]) -> None:
    """Analyse the children of an opaque module separately (its boundary stays pinned)."""
    for name, child in module.named_children():
        _visit(child, f"{fqn}.{name}", calls, g, rules, names)


__all__ = ["Graph", "Value", "Layout", "analyse", "trace", "capture_calls", "attention_rule",
           "flat_shape_expand"]
