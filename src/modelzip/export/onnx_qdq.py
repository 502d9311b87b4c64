"""QDQ completion: quantize a static layer's input where it is produced.

modelzip's static layers quantize their own input. ORT fuses ``DQ -> Conv -> Q`` into
QLinearConv only when the producing layer's output is quantized too, so the input
QuantizeLinear of each static layer is copied upstream through Relu, MaxPool, Flatten and
Reshape (monotone ops that map the quantization grid onto itself, so the values are
unchanged: Q(relu(y)) = relu-on-grid(Q(y)), and re-quantizing a grid value is exact) and
placed as Q -> DQ right after the producing node.
"""

from __future__ import annotations

from pathlib import Path

_PASS = {"Relu", "MaxPool", "Flatten", "Reshape"}


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def complete_qdq(path: Path) -> int:
    """Rewrite ``path`` in place; returns how many Q -> DQ pairs were placed upstream."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    inits = {i.name for i in graph.initializer} | {
        n.output[0] for n in graph.node if n.op_type == "Constant"}
    inits |= {n.output[0] for n in graph.node if n.op_type == "Identity"
              and n.input[0] in inits}
    placed = 0
    for q in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        if not all(i in inits for i in q.input[1:]) or len(q.input) < 3:
            continue
        src, first = q.input[0], q
        while src in producer and producer[src].op_type in _PASS and \
                len(consumers.get(src, [])) == 1:
            first = producer[src]
            src = first.input[0]
        if first is q or src not in producer or len(consumers.get(src, [])) != 1:
            continue
        qo, do = f"{src}_q{placed}", f"{src}_dq{placed}"
        new_q = helper.make_node("QuantizeLinear", [src, *q.input[1:]], [qo],
                                 name=f"upq_{placed}")
        new_dq = helper.make_node("DequantizeLinear", [qo, *q.input[1:]], [do],
                                  name=f"updq_{placed}")
        first.input[0] = do
        idx = list(graph.node).index(first)
        graph.node.insert(idx, new_dq)
        graph.node.insert(idx, new_q)
        placed += 1
    if placed:
        onnx.save(model, str(path))
    return placed
