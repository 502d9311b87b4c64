"""Round trip (issue 15): a compressed-tensors folder written by the compressed-tensors
library itself (its QuantizationConfig, qparams and ModelCompressor, the llm-compressor
save path) -> modelzip (load_pretrained) -> .mzip -> compressed-tensors folder written by
modelzip -> transformers: the same outputs and the same packed tensors.

Model: the Llama-architecture char-level model of hf_export.py (trained 300 steps on Tiny
Shakespeare, cached). Schemes: W4A16 symmetric group 32 and W8A16 per channel.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from _hf_common import perplexity, trained, transformers_logits, val_batch
from common import fmt, write_result
from safetensors.torch import load_file

import modelzip as mz
from modelzip.export.hf_save import folder_bytes
from modelzip.io.hf import load_pretrained


def library_folder(model: torch.nn.Module, folder: Path, bits: int, group: int | None) -> None:
    """Quantize ``model`` with compressed-tensors' own config and min-max qparams, then
    save it the way llm-compressor does (compress_model, save_pretrained, update_config)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )
    from compressed_tensors.quantization.utils import calculate_qparams

    args = QuantizationArgs(num_bits=bits, symmetric=True, group_size=group,
                            strategy="group" if group else "channel")
    apply_quantization_config(model, QuantizationConfig(config_groups={
        "group_0": QuantizationScheme(targets=["Linear"], weights=args)}, ignore=["lm_head"]))
    for _, m in model.named_modules():
        if getattr(m, "quantization_scheme", None) is None:
            continue
        w = m.weight.detach()
        wg = w.reshape(w.shape[0], -1, group) if group else w.unsqueeze(1)
        scale, zp = calculate_qparams(wg.amin(-1), wg.amax(-1), args)
        m.weight_scale.data.copy_(scale.reshape(m.weight_scale.shape))
    comp = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    comp.compress_model(model)
    model.save_pretrained(folder)
    comp.update_config(folder)


def one(base: torch.nn.Module, val: tuple, tmp: Path, bits: int, group: int | None) -> list:
    x, y = val
    lib = tmp / f"lib-{bits}-{group}"
    library_folder(copy.deepcopy(base), lib, bits, group)
    l0 = transformers_logits(lib, x)                      # library folder in transformers
    model = load_pretrained(lib, "AutoModelForCausalLM")  # -> modelzip codes
    with torch.no_grad():
        l1 = model(input_ids=x).logits
    path = tmp / f"m-{bits}-{group}.mzip"
    nbytes = mz.save(model, path)
    back = mz.load(path)
    with torch.no_grad():
        l2 = back(input_ids=x).logits
    out = tmp / f"out-{bits}-{group}"
    s = mz.save_pretrained(back, out, "compressed-tensors")
    l3 = transformers_logits(out, x)                      # modelzip's folder in transformers
    a, b = load_file(lib / "model.safetensors"), load_file(out / "model.safetensors")
    packed = [k for k in a if k.endswith("weight_packed")]
    same = sum(torch.equal(a[k], b.get(k, torch.empty(0))) for k in packed)
    return [f"W{bits}A16 " + (f"group {group}" if group else "channel"),
            fmt(float((l0 - l1).abs().max()), 8), fmt(float((l1 - l2).abs().max()), 8),
            fmt(float((l0 - l3).abs().max()), 8), f"{same}/{len(packed)}",
            fmt(perplexity(l0, y), 4), fmt(perplexity(l3, y), 4),
            folder_bytes(lib), nbytes, s["bytes"]]


def main() -> None:
    torch.set_num_threads(2)
    base, split = trained("llama")
    with torch.no_grad():
        val = val_batch(split)
        fp32_ppl = perplexity(base(input_ids=val[0]).logits, val[1])
    with tempfile.TemporaryDirectory(prefix="mz-ct-rt-") as d:
        rows = [one(base, val, Path(d), 4, 32), one(base, val, Path(d), 8, None)]
    cols = ["scheme", "max |d| library folder (transformers) vs modelzip",
            "max |d| modelzip vs .mzip reloaded", "max |d| library folder vs modelzip's "
            "folder (both transformers)", "packed tensors identical", "ppl library folder",
            "ppl modelzip folder", "library folder bytes", ".mzip bytes",
            "modelzip folder bytes"]
    write_result("hf_ct_roundtrip", "compressed-tensors round trip through modelzip",
                 [{"title": f"Llama-architecture char model (Tiny Shakespeare, fp32 perplexity "
                            f"{fp32_ppl:.4f} on the same 16 x 128 validation windows)",
                   "columns": cols, "rows": rows}],
                 notes=["Every transformers figure comes from a fresh process with a clean "
                        "load report (no missing, unexpected or mismatched tensor)."])


if __name__ == "__main__":
    main()
