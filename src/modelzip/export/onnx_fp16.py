"""Dense float weights stored as fp16 in an ONNX file (computed in fp32 after a Cast)."""

from __future__ import annotations

from pathlib import Path

MIN_ELEMENTS = 1024
_KEEP_FLOAT = ("QuantizeLinear", "DequantizeLinear", "MatMulNBits", "GatherBlockQuantized",
               "DynamicQuantizeMatMul")


def dense_to_fp16(path: Path) -> int:
    """Rewrite ``path``: every float32 initializer of at least MIN_ELEMENTS that feeds no
    quantization operator becomes fp16 + Cast; returns how many were converted."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    keep = {i for n in graph.node if n.op_type in _KEEP_FLOAT for i in n.input}
    done = 0
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.name in keep:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < MIN_ELEMENTS:
            continue
        name16 = init.name + "_fp16"
        init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), name16))
        casts.append(helper.make_node("Cast", [name16], [name16[:-5]], to=onnx.TensorProto.FLOAT,
                                      name=f"cast_{name16}"))
        done += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(path))
    return done
