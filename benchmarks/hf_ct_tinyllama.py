"""Issue 15, acceptance "W4A16 folder of a Llama-architecture model at most 0.4x the fp32
folder", at a real model's proportions: a Llama at TinyLlama-1.1B's shape (hidden 2048,
intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000, untied head), random
weights born in bf16 (no fp32 peak), RTN 4-bit group 128 on every Linear of the blocks
(the head and embeddings stay dense, as llm-compressor and vLLM keep them), written with
``mz.save_pretrained(..., "compressed-tensors")``.

Every size is the bytes of a real folder: the bf16 and the fp32 folders are written by
transformers' own ``save_pretrained`` (the fp32 one from the same weights upcast, then
deleted). The compressed-tensors folder is checked by the export itself: transformers
loads it in a fresh process and its logits are compared with modelzip's on 2 sequences of
16 tokens (in float32 on both sides, the model being bf16), plus a second fresh load in
bf16 against modelzip's bf16 forward, for information.
"""

from __future__ import annotations

import copy
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import CACHE, fmt, write_result

import modelzip as mz
from modelzip.export.hf_save import folder_bytes
from modelzip.export.hf_verify import example_inputs, load_in_transformers, model_output

SHAPE = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
         "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000,
         "max_position_embeddings": 2048, "tie_word_embeddings": False}


def build() -> torch.nn.Module:
    """The model at TinyLlama-1.1B's shape, random init, born in bf16."""
    import transformers

    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE))
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def counts(model: torch.nn.Module) -> dict[str, int]:
    """Parameters by role: the block Linears (quantized) and the rest (kept dense)."""
    linear = sum(m.weight.numel() for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and n.startswith("model.layers."))
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "block_linear": linear, "dense": total - linear}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def plain_folders(model: torch.nn.Module, work: Path) -> dict[str, float]:
    """bf16 and fp32 folders through transformers' own save_pretrained: bytes, seconds."""
    out = {}
    for name in ("bf16", "fp32"):
        t0 = time.perf_counter()
        # an fp32 copy, not model.to(): a round trip would leave the rotary inv_freq
        # buffer rounded to bf16
        src = model if name == "bf16" else copy.deepcopy(model).float()
        src.save_pretrained(work / name)
        del src
        out[f"{name}_bytes"] = folder_bytes(work / name)
        out[f"{name}_s"] = time.perf_counter() - t0
        shutil.rmtree(work / name)
    return out


def bf16_check(model: torch.nn.Module, folder: Path) -> list[float]:
    """Max |logit difference| with both sides in bf16 (a second fresh transformers load),
    and each side's bf16 logits against modelzip's float32 logits (the same weights)."""
    x = example_inputs(model)
    got = load_in_transformers([(folder, x)])[0]
    if "out" not in got:
        raise RuntimeError(f"bf16 load failed: {got.get('error')}")
    ours = model_output(model, x)
    exact = model_output(copy.deepcopy(model).float(), x)
    return [float((ours - got["out"]).abs().max()), float((ours - exact).abs().max()),
            float((got["out"] - exact).abs().max())]


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = build()
    build_s = time.perf_counter() - t0
    n = counts(model)
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hf-ct-tinyllama-", dir=CACHE) as d:
        work = Path(d)
        sizes = plain_folders(model, work)
        t0 = time.perf_counter()
        mz.quantize(model, mz.WeightOnly(bits=4, group_size=128, targets=["Linear"],
                                         ignore=["re:lm_head"]))
        quant_s = time.perf_counter() - t0
        # no entropy coders: "auto" tries every coder on every stream, far too slow at 1.1B
        mzip_bytes = mz.save(model, work / "m.mzip", entropy="none")
        t0 = time.perf_counter()
        s = mz.save_pretrained(model, work / "ct", "compressed-tensors")
        export_s = time.perf_counter() - t0
        bf16 = bf16_check(model, work / "ct")
    v, ct = s["verify"], s["bytes"]
    # the same folder if the dense tensors (embeddings, head, norms) were fp32: +2 bytes each
    ct_fp32_dense = ct + 2 * n["dense"]
    rows = [
        ["fp32 folder (transformers save_pretrained, written)", sizes["fp32_bytes"], 1.0],
        ["bf16 folder (transformers save_pretrained, written)", sizes["bf16_bytes"],
         fmt(sizes["bf16_bytes"] / sizes["fp32_bytes"])],
        [".mzip (modelzip, W4 g128 packed, entropy='none')", mzip_bytes,
         fmt(mzip_bytes / sizes["fp32_bytes"])],
        ["compressed-tensors W4A16 g128 (written; embeddings, head, norms bf16)", ct,
         fmt(ct / sizes["fp32_bytes"])],
        ["compressed-tensors W4A16 g128 with embeddings, head, norms fp32 (computed: written "
         "folder + 2 bytes per dense parameter)", ct_fp32_dense,
         fmt(ct_fp32_dense / sizes["fp32_bytes"])],
    ]
    checks = [["float32 (both sides upcast; the export's own verification)", v["dtype"],
               v["max_abs_diff"], fmt(v["cosine"], 8), v["tolerance"]],
              ["bfloat16 (both sides bf16; information, not gated)", "bfloat16",
               bf16[0], "", ""],
              ["bfloat16: modelzip's bf16 logits vs its float32 logits (rounding alone)",
               "", bf16[1], "", ""],
              ["bfloat16: transformers' bf16 logits vs modelzip's float32 logits", "bfloat16",
               bf16[2], "", ""]]
    write_result("hf_ct_tinyllama", "compressed-tensors W4A16 at TinyLlama-1.1B's shape", [
        {"title": f"Folder bytes ({n['total']:,} parameters: {n['block_linear']:,} in block "
                  f"Linears quantized, {n['dense']:,} dense)",
         "columns": ["folder", "bytes", "x fp32 folder"], "rows": rows},
        {"title": "transformers (fresh process) vs modelzip, logits on 2 x 16 random tokens",
         "columns": ["compared in", "transformers loaded as", "max |d| logits", "cosine",
                     "allowed"], "rows": checks}],
        notes=[f"ct / bf16 folder: {ct / sizes['bf16_bytes']:.4f}. Acceptance: W4A16 folder "
               f"<= 0.4x the fp32 folder: {ct / sizes['fp32_bytes']:.4f} as written, "
               f"{ct_fp32_dense / sizes['fp32_bytes']:.4f} with fp32 dense tensors.",
               f"Seconds: build {build_s:.0f}, bf16 folder {sizes['bf16_s']:.0f}, fp32 folder "
               f"{sizes['fp32_s']:.0f}, RTN quantize {quant_s:.0f}, compressed-tensors export "
               f"with verification {export_s:.0f}. Peak RSS of this process {peak_mb():.0f} MiB "
               "(the transformers children's ru_maxrss is not reported: a forked child counts "
               "the parent's pages).",
               "Random weights: sizes and the transformers/modelzip agreement are what is "
               "measured here, not quality."],
        extra={"params": n, "summary_format": s["format"], "verify": v})


if __name__ == "__main__":
    main()
