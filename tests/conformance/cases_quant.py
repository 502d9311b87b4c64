"""Conformance cases of the quantization area: WeightOnly (RTN variants, binary, ternary,
packed, GPTQ, AWQ), Int8 (dynamic, static observers, SmoothQuant, conv), QAT, Clip.

QAT is run as quantize + ``mz.convert`` (the fake-quant stage is a training device and
stores floats); Clip is run as clip + 8-bit weight-only quantization with the same
targets, since clipping alone changes float values but cannot shrink a file.
"""

import torch

import modelzip as mz

from .cases import Case, mlp_calib


def _wo(**base):
    return lambda **k: mz.WeightOnly(**{**base, **k})


def _int8(**base):
    return lambda **k: mz.Int8(**{**base, **k})


def qat_then_convert(model, cfg, **_):
    return mz.convert(mz.quantize(model, cfg))


def clip_then_quantize(model, cfg, **_):
    mz.clip(model, cfg)
    return mz.quantize(model, mz.WeightOnly(bits=8, group_size=None, targets=cfg.targets,
                                            ignore=cfg.ignore))


def lenet5():
    torch.manual_seed(0)
    return mz.zoo.lenet5(image_size=8)


def image_calib():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(16, 1, 8, 8, generator=g) for _ in range(3)]


CASES = [
    Case("weightonly-rtn3-g32-mse", _wo(bits=3, group_size=32, clip="mse"), mz.quantize,
         invalid=[{"clip": "max"}, {"rounding": "up"}, {"percdamp": 0.0}]),
    Case("weightonly-binary", _wo(bits=1, group_size=None), mz.quantize,
         invalid=[{"symmetric": False}]),
    Case("weightonly-ternary", _wo(bits=2, group_size=-1), mz.quantize),
    Case("weightonly-packed4", _wo(bits=4, group_size=32, packed=True), mz.quantize,
         invalid=[{"packed": "yes"}]),  # any 1-8 bits pack (3-bit in 4-bit slots)
    Case("weightonly-gptq4", _wo(bits=4, group_size=32, method="gptq"), mz.quantize,
         calib=mlp_calib, invalid=[{"blocksize": 0}]),
    Case("weightonly-gptq3-actorder", _wo(bits=3, group_size=None, method="gptq",
                                          actorder=True), mz.quantize, calib=mlp_calib),
    Case("weightonly-awq4", _wo(bits=4, group_size=32, method="awq"), mz.quantize,
         calib=mlp_calib),
    Case("int8-dynamic", _int8(), mz.quantize,
         invalid=[{"activations": "sometimes"}, {"smoothquant": 1.5}]),
    Case("int8-static-minmax", _int8(activations="static"), mz.quantize, calib=mlp_calib,
         invalid=[{"observer": "max"}, {"percentile": 20.0}]),
    Case("int8-static-entropy", _int8(activations="static", observer="entropy"), mz.quantize,
         calib=mlp_calib),
    Case("int8-smoothquant", _int8(smoothquant=0.5), mz.quantize, calib=mlp_calib),
    Case("int8-static-conv-percentile", _int8(activations="static", observer="percentile"),
         mz.quantize, model=lenet5, calib=image_calib, first="0", middle="3"),
    Case("qat4-convert", lambda **k: mz.QAT(**{"bits": 4, **k}), qat_then_convert,
         invalid=[{"bits": 0}, {"activations": "dynamic"}]),
    Case("qat8-int8", lambda **k: mz.QAT(**{"bits": 8, "activations": "dynamic", **k}),
         qat_then_convert),
    Case("clip-fixed", lambda **k: mz.Clip(**{"threshold": 0.03, "value": 0.0, **k}),
         clip_then_quantize, invalid=[{"threshold": None}, {"threshold": -1.0},
                                      {"method": "median"}]),
    Case("clip-mse", lambda **k: mz.Clip(**{"method": "mse", "bits": 4, **k}),
         clip_then_quantize, invalid=[{"method": "mse", "bits": 1}]),
]
