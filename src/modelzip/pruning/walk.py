"""Walk one traced graph and record channel dependencies into a :class:`Graph`."""

from __future__ import annotations

from typing import Any

import torch.fx as fx
from torch import nn

from .rules import PASS_MODULES, Rules, op_kind
from .spaces import Graph, Layout, Value, flat_shape_expand

Env = dict[fx.Node, Any]


def walk(gm: fx.GraphModule, prefix: str, g: Graph, rules: Rules, opaque: set[int],
         message: str) -> None:
    """Record every node of ``gm`` (a module at ``prefix``) into ``g``."""
    env: Env = {}
    for node in gm.graph.nodes:
        shape = node.meta.get("mz_shape")
        if node.op == "placeholder":
            env[node] = None
        elif node.op == "output":
            for v in _values(node.args, env):
                g.pin(v.layout)
        elif node.op == "get_attr":
            owner = node.target.rpartition(".")[0]
            g.pinned_modules.add(_join(prefix, owner))
            env[node] = None
        elif node.op == "call_module":
            m = gm.get_submodule(node.target)
            fqn = _join(prefix, node.target)
            why = f"module '{fqn}' could not be traced ({message})" if id(m) in opaque else None
            env[node] = _module(m, fqn, node, env, g, rules, shape, why)
        else:
            env[node] = _function(node, env, g, shape)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else (prefix or name)


def _values(args: Any, env: Env) -> list[Value]:
    """Every Value among (nested) node arguments."""
    out: list[Value] = []
    if isinstance(args, fx.Node):
        v = env.get(args)
        if isinstance(v, Value):
            out.append(v)
    elif isinstance(args, (tuple, list)):
        for a in args:
            out.extend(_values(a, env))
    elif isinstance(args, dict):
        for a in args.values():
            out.extend(_values(a, env))
    return out


def _first(node: fx.Node, env: Env) -> Value | None:
    vals = _values(node.args[:1], env)
    return vals[0] if vals else None


def _ndim(node: Any) -> int | None:
    s = node.meta.get("mz_shape") if isinstance(node, fx.Node) else None
    return len(s) if s is not None else None


def _unknown(g: Graph, what: str, node: fx.Node, env: Env) -> None:
    vals = _values((node.args, node.kwargs), env)
    if vals:
        g.unknown.append((what, [v.layout for v in vals]))


# ============================================================================ modules
def _module(m: nn.Module, fqn: str, node: fx.Node, env: Env, g: Graph, rules: Rules,
            shape: tuple | None, why: str | None) -> Value | None:
    v = _first(node, env)
    nd = len(shape) if shape else None
    if why is not None or getattr(m, "_mz_reparam", None) or shape is None:
        _unknown(g, why or f"module '{fqn}' ({type(m).__name__})", node, env)
        return None
    att = rules.attention(m)
    if att is not None:
        q, k, v_, out = att.projections(m)
        for name in (att.q, att.k, att.v):
            _consume(g, f"{fqn}.{name}", v, last=True, nd=_ndim(node.args[0]))
        g.heads.append(fqn)
        return _produce(g, f"{fqn}.{att.out}", out.out_features, nd - 1)
    if isinstance(m, nn.Linear):
        _consume(g, fqn, v, last=True, nd=_ndim(node.args[0]))
        return _produce(g, fqn, m.out_features, nd - 1)
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        return _conv(m, fqn, v, g, node, env)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return _norm(g, fqn, v, v is not None and v.cdim == 1)
    if isinstance(m, nn.LayerNorm):
        ok = v is not None and len(m.normalized_shape) == 1 and v.cdim == nd - 1
        return _norm(g, fqn, v, ok)
    if isinstance(m, PASS_MODULES):
        return v
    if isinstance(m, nn.Flatten):
        return _reshape(v, node, g)
    if isinstance(m, nn.Embedding):
        return None
    _unknown(g, f"module '{fqn}' ({type(m).__name__})", node, env)
    return None


def _consume(g: Graph, fqn: str, v: Value | None, *, last: bool, nd: int | None,
             cdim: int = 1) -> None:
    """Record that ``fqn`` reads its input features along ``v``'s layout."""
    if v is None:
        return
    if (last and v.cdim != (nd or 0) - 1) or (not last and v.cdim != cdim):
        g.pin(v.layout)
        return
    g.ins.setdefault(fqn, []).append(v.layout)


def _produce(g: Graph, fqn: str, size: int, cdim: int) -> Value:
    if fqn not in g.outs:
        g.outs[fqn] = g.new(size)
    return Value(((g.outs[fqn], 1),), cdim)


def _conv(m: nn.Conv1d | nn.Conv2d, fqn: str, v: Value | None, g: Graph, node: fx.Node,
          env: Env) -> Value | None:
    if m.groups == 1:
        _consume(g, fqn, v, last=False, nd=None)
        return _produce(g, fqn, m.out_channels, 1)
    depthwise = m.groups == m.in_channels == m.out_channels
    if depthwise and v is not None and v.cdim == 1 and all(e == 1 for _, e in v.layout):
        g.depthwise.setdefault(fqn, []).append(v.layout)
        return v
    _unknown(g, f"grouped convolution '{fqn}' (groups={m.groups})", node, env)
    return None


def _norm(g: Graph, fqn: str, v: Value | None, ok: bool) -> Value | None:
    if v is None:
        return None
    if ok and all(e == 1 for _, e in v.layout):
        g.norms.setdefault(fqn, []).append(v.layout)
    else:
        g.pin(v.layout)
    return v


# ========================================================================== functions
def _function(node: fx.Node, env: Env, g: Graph, shape: tuple | None) -> Value | None:
    kind = op_kind(node.target, node.op == "call_method")
    v = _first(node, env)
    if kind == "shape" or shape is None:
        if kind not in ("shape", "getitem"):
            _unknown(g, f"'{_name(node)}' (non-tensor result)", node, env)
        return None
    if kind == "unary":
        return v
    if kind == "binary":
        return _binary(node, env, g, shape)
    if kind == "cat":
        return _cat(node, env, g, shape)
    if kind == "reshape":
        return _reshape(v, node, g)
    if kind == "reduce":
        return _reduce(v, node, g, shape)
    if kind == "permute":
        return _permute(v, node, g)
    if kind == "softmax":
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        if v is not None and isinstance(dim, int) and dim % len(shape) != v.cdim:
            return v
    if kind == "getitem" and v is not None and _shape(node.args[0]) == shape:
        return v
    if v is None and not _values((node.args, node.kwargs), env):
        return None
    _unknown(g, f"'{_name(node)}' ({node.name})", node, env)
    return None


def _name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _shape(node: Any) -> tuple | None:
    return node.meta.get("mz_shape") if isinstance(node, fx.Node) else None


def _binary(node: fx.Node, env: Env, g: Graph, shape: tuple) -> Value | None:
    """Element-wise op of tensors: channels of all full-width operands are coupled."""
    out: Value | None = None
    fixed = False
    for a in node.args:
        s = _shape(a)
        if s is None:
            continue  # a Python scalar
        v = env.get(a)
        if v is None:
            fixed = fixed or _full_width(s, shape, None)
            continue
        cdim = v.cdim + len(shape) - len(s)
        if not _full_width(s, shape, v.cdim):
            continue  # broadcast along the channels: does not constrain them
        moved = Value(v.layout, cdim)
        if out is None:
            out = moved
        elif out.cdim != cdim or not g.join(out.layout, moved.layout):
            g.pin(out.layout)
            g.pin(moved.layout)
    if out is not None and fixed:
        g.pin(out.layout)
    return out


def _full_width(s: tuple, out: tuple, cdim: int | None) -> bool:
    if cdim is None:
        return len(s) > 0 and s[-1] != 1 or any(d != 1 for d in s)
    return s[cdim] != 1 or out[cdim + len(out) - len(s)] == 1


def _cat(node: fx.Node, env: Env, g: Graph, shape: tuple) -> Value | None:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    dim = dim % len(shape)
    vals = [env.get(t) for t in tensors]
    cd = next((v.cdim for v in vals if v is not None), None)
    if cd is None:
        return None
    if dim != cd:  # joining along another dim: all inputs share their channels
        out = None
        for v in vals:
            if v is None or v.cdim != cd:
                _unknown(g, "'cat'", node, env)
                return None
            if out is None:
                out = v
            elif not g.join(out.layout, v.layout):
                return Value(out.layout, cd)
        return out
    layout: Layout = ()
    for t, v in zip(tensors, vals):
        if v is None:
            layout += ((g.new(_shape(t)[cd], pin=True), 1),)
        elif v.cdim != cd:
            _unknown(g, "'cat'", node, env)
            return None
        else:
            layout += v.layout
    return Value(layout, cd)


def _reshape(v: Value | None, node: fx.Node, g: Graph) -> Value | None:
    if v is None:
        return None
    src, dst = _shape(node.args[0]), node.meta.get("mz_shape")
    res = flat_shape_expand(src, dst, v.cdim) if src and dst else None
    if res is None:
        g.unknown.append((f"reshape '{node.name}' {src} -> {dst}", [v.layout]))
        return None
    cdim, expand = res
    return Value(tuple((s, e * expand) for s, e in v.layout), cdim)


def _reduce(v: Value | None, node: fx.Node, g: Graph, shape: tuple) -> Value | None:
    if v is None:
        return None
    src = _shape(node.args[0])
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if src is None or dims is None:
        g.unknown.append((f"reduction '{node.name}'", [v.layout]))
        return None
    dims = {d % len(src) for d in (dims if isinstance(dims, (tuple, list)) else [dims])}
    if v.cdim in dims:
        g.unknown.append((f"reduction over channels '{node.name}'", [v.layout]))
        return None
    keep = len(shape) == len(src)
    return Value(v.layout, v.cdim if keep else v.cdim - sum(d < v.cdim for d in dims))


def _permute(v: Value | None, node: fx.Node, g: Graph) -> Value | None:
    if v is None:
        return None
    src = _shape(node.args[0])
    nd = len(src) if src else 0
    args = [a for a in node.args[1:]]
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = list(args[0])
    if _name(node) == "transpose" and len(args) == 2:
        a, b = (x % nd for x in args)
        cdim = b if v.cdim == a else a if v.cdim == b else v.cdim
        return Value(v.layout, cdim)
    if len(args) == nd and all(isinstance(a, int) for a in args):
        return Value(v.layout, [a % nd for a in args].index(v.cdim))
    g.unknown.append((f"permute '{node.name}'", [v.layout]))
    return None
