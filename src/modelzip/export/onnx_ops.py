"""ONNX emitters for modelzip's integer layers: torch autograd Functions whose ``symbolic``
writes the integer operators into the graph the TorchScript exporter builds.

Each ``forward`` computes a float stand-in from the same integer tensors (the exporter only
needs shapes and plausible values); the exported graph carries the integer tensors
themselves as int8 / uint8 initializers. Verification compares the ONNX Runtime output with
modelzip's own module, not with these stand-ins.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

FLOAT = 1  # onnx TensorProto.FLOAT


def const(g: Any, value: Any, dtype: torch.dtype = torch.float32) -> Any:
    return g.op("Constant", value_t=torch.as_tensor(value, dtype=dtype))


def _scaled_input(g: Any, x: Any, inscale: Any) -> Any:
    return x if inscale is None else g.op("Mul", x, inscale)


def typed(out: Any, like: Any, last: int | None = None) -> Any:
    """Give a custom op's output ``like``'s type (last dim ``last``): the exporter has no
    shape inference for com.microsoft operators."""
    try:
        sizes = like.type().varyingSizes()
        if sizes is not None and last is not None:
            sizes = list(sizes[:-1]) + [last]
        t = like.type().with_dtype(torch.float32)
        out.setType(t.with_sizes(sizes) if sizes is not None else t)
    except (RuntimeError, AttributeError, TypeError):
        pass
    return out


def _token_quant(g: Any, x: Any, k: int) -> tuple[Any, Any]:
    """Per-row (token) uint8 codes of ``x`` as [M, K] (scale max|x| / 127 clamped as
    modelzip does, zero point 128: modelzip's int8 codes + 128) and the scales [M, 1]. Two
    reductions (no |x| buffer) and one QuantizeLinear with per-row (axis 0) scales."""
    x2 = g.op("Reshape", x, const(g, [-1, k], torch.int64))
    hi = g.op("ReduceMax", x2, axes_i=[1], keepdims_i=1)
    lo = g.op("ReduceMin", x2, axes_i=[1], keepdims_i=1)
    s = g.op("Div", g.op("Max", g.op("Max", hi, g.op("Neg", lo)), const(g, 1e-8)),
             const(g, 127.0))
    s1 = g.op("Reshape", s, const(g, [-1], torch.int64))
    zp = g.op("Expand", const(g, [128], torch.uint8), g.op("Shape", s1))
    return g.op("QuantizeLinear", x2, s1, zp, axis_i=0), s


def _shared(g: Any, x: Any, mode: str, cache: dict | None, k: int) -> tuple:
    """The activation quantization of ``x`` for ``mode``, built once per input: layers
    that read the same tensor (attention Q/K/V) share it. ``cache`` lives for one export."""
    key = (mode, x.debugName())
    if cache is not None and key in cache:
        return cache[key]
    if mode == "token":
        out = _token_quant(g, x, k)
    else:
        out = tuple(g.op("DynamicQuantizeLinear", x, outputs=3))
    if cache is not None:
        cache[key] = out
    return out


def int8_dynamic_symbolic(g: Any, x: Any, spec: tuple, codes: Any, w_scale: Any,
                          bias: Any, inscale: Any) -> Any:
    """Int8 dynamic Linear; ``spec`` = (mode, shared, cache). ``token``: per-token scales,
    activation shifted to uint8 with zero point 128 (fast u8 x s8 kernels),
    MatMulIntegerToFloat with the per-channel weight scales, then the row scales and bias.
    ``tensor``: one activation scale per call: com.microsoft DynamicQuantizeMatMul, or,
    when ``shared`` (several layers read this input), one DynamicQuantizeLinear and a
    MatMulIntegerToFloat per layer with the bias fused."""
    mode, shared, cache = spec
    x = _scaled_input(g, x, inscale)
    k, n = codes.type().varyingSizes()
    zero8 = g.op("Constant", value_t=torch.zeros(1, dtype=torch.int8))
    if mode == "tensor" and not shared:
        args = [x, codes, w_scale, zero8] + ([bias] if bias is not None else [])
        return typed(g.op("com.microsoft::DynamicQuantizeMatMul", *args), x, n)
    if mode == "tensor":
        q, s, z = _shared(g, x, mode, cache, k)
        args = [q, codes, s, w_scale, z, zero8] + ([bias] if bias is not None else [])
        return typed(g.op("com.microsoft::MatMulIntegerToFloat", *args), x, n)
    q, s = _shared(g, x, mode, cache, k)
    y = g.op("com.microsoft::MatMulIntegerToFloat", q, codes, const(g, 1.0), w_scale,
             const(g, 128, torch.uint8))
    y = g.op("Mul", typed(y, q, n), s)
    lead = g.op("Slice", g.op("Shape", x), const(g, [0], torch.int64),
                const(g, [-1], torch.int64))
    y = g.op("Reshape", y, g.op("Concat", lead, const(g, [n], torch.int64), axis_i=0))
    # bias last, on the original shape (its shape stays unknown to ORT, so ORT does not
    # fuse the residual Add + LayerNorm into SkipLayerNormalization: slower in ORT 1.32)
    return y if bias is None else g.op("Add", y, bias)


class Int8DynamicLinear(torch.autograd.Function):
    """x [.., K] -> [.., N] with int8 codes [K, N] and scales [N]."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, spec: tuple, codes: torch.Tensor,
                w_scale: torch.Tensor, bias: torch.Tensor | None,
                inscale: torch.Tensor | None) -> torch.Tensor:
        x = x if inscale is None else x * inscale
        y = x @ (codes.float() * w_scale)
        return y if bias is None else y + bias

    symbolic = staticmethod(int8_dynamic_symbolic)


def qdq(g: Any, x: Any, scale: Any, zero: Any, axis: int | None = None) -> Any:
    """QuantizeLinear -> DequantizeLinear (the QDQ pair ORT fuses into integer kernels)."""
    kw = {} if axis is None else {"axis_i": axis}
    return g.op("DequantizeLinear", g.op("QuantizeLinear", x, scale, zero, **kw), scale, zero,
                **kw)


def dq_weight(g: Any, codes: Any, scale: Any, axis: int) -> Any:
    return g.op("DequantizeLinear", codes, scale, axis_i=axis)


def int8_static_symbolic(g: Any, x: Any, act_scale: Any, act_zero: Any, codes: Any,
                         w_scale: Any, bias: Any, inscale: Any) -> Any:
    """Int8 static Linear: QuantizeLinear with the calibrated scale (uint8, zero point
    shifted by 128: the same codes) and MatMulIntegerToFloat (int8 weights [K, N],
    per-channel scales, bias fused): ORT's integer kernel, no fusion needed."""
    x = _scaled_input(g, x, inscale)
    q = g.op("QuantizeLinear", x, act_scale, act_zero)
    n = codes.type().varyingSizes()[-1]
    y = typed(g.op("com.microsoft::MatMulIntegerToFloat", q, codes, act_scale, w_scale,
                   act_zero), x, n)
    return y if bias is None else g.op("Add", y, bias)


class Int8StaticLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, act_scale: torch.Tensor, act_zero: torch.Tensor,
                codes: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                inscale: torch.Tensor | None) -> torch.Tensor:
        x = x if inscale is None else x * inscale
        y = x @ (codes.float() * w_scale)
        return y if bias is None else y + bias

    symbolic = staticmethod(int8_static_symbolic)


def int8_conv_symbolic(g: Any, x: Any, conv: tuple, act_scale: Any, act_zero: Any,
                       codes: Any, w_scale: Any, bias: Any) -> Any:
    """Int8 Conv2d. Static: QDQ form (Q/DQ input with the calibrated uint8 qparams,
    per-channel DQ int8 weight) that ORT fuses into QLinearConv once the producer's output
    is quantized too (see :mod:`.onnx_qdq`). Dynamic (``act_scale`` None):
    DynamicQuantizeLinear + ConvInteger, one activation scale per call, rescaled per
    output channel."""
    stride, padding, dilation = conv
    kw = {"strides_i": list(stride), "pads_i": list(padding) * 2,
          "dilations_i": list(dilation)}
    if act_scale is not None:
        args = [qdq(g, x, act_scale, act_zero), dq_weight(g, codes, w_scale, 0)]
        return g.op("Conv", *args, *([bias] if bias is not None else []), **kw)
    q, s, z = g.op("DynamicQuantizeLinear", x, outputs=3)
    acc = g.op("ConvInteger", q, codes, z, **kw)
    shape = const(g, [1, -1, 1, 1], torch.int64)
    y = g.op("Mul", g.op("Cast", acc, to_i=FLOAT),
             g.op("Reshape", g.op("Mul", w_scale, s), shape))
    return y if bias is None else g.op("Add", y, g.op("Reshape", bias, shape))


class Int8Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: tuple, act_scale: torch.Tensor | None,
                act_zero: torch.Tensor | None, codes: torch.Tensor, w_scale: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        stride, padding, dilation = conv
        w = codes.float() * w_scale.reshape(-1, 1, 1, 1)
        return F.conv2d(x, w, bias, stride, padding, dilation)

    symbolic = staticmethod(int8_conv_symbolic)


def nbits_symbolic(g: Any, x: Any, attrs: tuple, packed: Any, scales: Any, zeros: Any,
                   bias: Any, inscale: Any, ref_w: Any) -> Any:
    """WeightOnly Linear as com.microsoft MatMulNBits (packed uint8 blocks) [+ bias]."""
    k, n, bits, block, level = attrs
    x = _scaled_input(g, x, inscale)
    args = [x, packed, scales] + ([zeros] if zeros is not None else [])
    y = typed(g.op("com.microsoft::MatMulNBits", *args, K_i=k, N_i=n, bits_i=bits,
                   block_size_i=block, accuracy_level_i=level), x, n)
    return y if bias is None else g.op("Add", y, bias)


class NBitsLinear(torch.autograd.Function):
    """``ref_w`` [N, K] float is only for the trace; the graph gets the packed codes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, attrs: tuple, packed: torch.Tensor,
                scales: torch.Tensor, zeros: torch.Tensor | None, bias: torch.Tensor | None,
                inscale: torch.Tensor | None, ref_w: torch.Tensor) -> torch.Tensor:
        x = x if inscale is None else x * inscale
        return F.linear(x, ref_w, bias)

    symbolic = staticmethod(nbits_symbolic)


def gather_symbolic(g: Any, idx: Any, attrs: tuple, data: Any, scales: Any, zeros: Any,
                    ref_w: Any) -> Any:
    """A quantized Embedding as com.microsoft GatherBlockQuantized (uint8 data)."""
    bits, block = attrs
    args = [data, idx, scales] + ([zeros] if zeros is not None else [])
    y = g.op("com.microsoft::GatherBlockQuantized", *args, bits_i=bits, block_size_i=block,
             gather_axis_i=0, quantize_axis_i=1)
    try:
        sizes = idx.type().varyingSizes()
        y.setType(ref_w.type().with_sizes(list(sizes) + [ref_w.type().varyingSizes()[-1]]))
    except (RuntimeError, AttributeError, TypeError):
        pass
    return y


class GatherBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, idx: torch.Tensor, attrs: tuple, data: torch.Tensor,
                scales: torch.Tensor, zeros: torch.Tensor | None,
                ref_w: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, ref_w)

    symbolic = staticmethod(gather_symbolic)


def dq_symbolic(g: Any, codes: Any, scale: Any, zero: Any, axis: int, ref_w: Any) -> Any:
    args = [codes, scale] + ([zero] if zero is not None else [])
    return g.op("DequantizeLinear", *args, axis_i=axis)


class DequantWeight(torch.autograd.Function):
    """An int8/uint8 weight [out, ...] with one scale (and zero) per output channel,
    dequantized in the graph by DequantizeLinear (axis 0)."""

    @staticmethod
    def forward(ctx: Any, codes: torch.Tensor, scale: torch.Tensor,
                zero: torch.Tensor | None, axis: int, ref_w: torch.Tensor) -> torch.Tensor:
        return ref_w.clone()

    symbolic = staticmethod(dq_symbolic)
