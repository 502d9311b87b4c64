"""Quantization: weight-only (RTN/GPTQ/AWQ), int8 activations, QAT, clipping."""

from .activation import Int8
from .clip import Clip
from .int8 import Int8Conv2d, Int8Linear
from .packed import PackedLinear
from .packed_convert import PackedEmbedding, pack_model, unpack_model
from .qat import QAT, convert
from .weight_only import WeightOnly

__all__ = ["WeightOnly", "Int8", "QAT", "Clip", "convert", "Int8Linear", "Int8Conv2d",
           "PackedLinear", "PackedEmbedding", "pack_model", "unpack_model"]
