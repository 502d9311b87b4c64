"""Pure tensor math with no nn.Module knowledge: quantization, packing, codecs, solvers."""
