"""Hugging Face folders out of modelzip (issue 15): folder bytes (fp32, dense,
compressed-tensors) beside the .mzip, and outputs through transformers (loaded in a fresh
process) against modelzip's own: max |difference|, cosine, perplexity where trained.

Models: all-MiniLM-L6-v2 (Int8 dynamic W8A8, 4-bit GPTQ), a Llama- and a GPT-2-architecture
model built from configs and trained 120 steps (batch 8) on Tiny Shakespeare (char level), and a
Llama-architecture model at a representative shape (hidden 512, 8 layers, intermediate
1536, a multiple of the group size 128 as Llama widths are, vocab 4096 / 32000;
random init: the byte ratio does not depend on training).
"""

from __future__ import annotations

import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from _hf_common import llama_cfg, perplexity, trained, transformers_logits, val_batch
from common import fmt, write_result

import modelzip as mz
from modelzip.errors import UnsupportedModelError
from modelzip.io import hf

ROWS: list[list[Any]] = []
COLS = ["model", "method", "fp32 folder", ".mzip", "dense folder", "c-t folder",
        "c-t / fp32", "c-t format", "max |d| logits", "cosine", "ppl modelzip",
        "ppl transformers (c-t)"]


def measure(name: str, method: str, model: torch.nn.Module, fp32_bytes: int, tmp: Path,
            val: tuple[torch.Tensor, torch.Tensor] | None = None, entropy: str = "auto"
            ) -> None:
    mzip = mz.save(model, tmp / f"{name}-{method}.mzip", entropy=entropy)
    dense = mz.save_pretrained(model, tmp / f"{name}-{method}-dense")
    try:
        ct = mz.save_pretrained(model, tmp / f"{name}-{method}-ct", "compressed-tensors")
    except UnsupportedModelError as exc:
        ROWS.append([name, method, fp32_bytes, mzip, dense["bytes"], "refused", "-",
                     str(exc)[:90], fmt(dense["verify"]["max_abs_diff"], 7), "-", "-", "-"])
        return
    v = ct["verify"]
    ppl_mz = ppl_tf = "-"
    if val is not None:
        x, y = val
        with torch.no_grad():
            ppl_mz = fmt(perplexity(model(input_ids=x).logits, y), 4)
        ppl_tf = fmt(perplexity(transformers_logits(tmp / f"{name}-{method}-ct", x), y), 4)
    ROWS.append([name, method, fp32_bytes, mzip, dense["bytes"], ct["bytes"],
                 fmt(ct["bytes"] / fp32_bytes, 3), ct["format"], fmt(v["max_abs_diff"], 7),
                 fmt(v["cosine"], 6), ppl_mz, ppl_tf])
    print(ROWS[-1], flush=True)


def fp32_folder(model: torch.nn.Module, tmp: Path, name: str) -> int:
    return mz.save_pretrained(model, tmp / f"{name}-fp32")["bytes"]


def minilm(tmp: Path) -> None:
    base = hf.load_pretrained(hf.minilm_path())
    fp32 = fp32_folder(base, tmp, "minilm")
    tok = hf.tokenizer(hf.minilm_path())
    calib = hf.encode_batches(tok, mz.data.sentences(64))
    m = mz.quantize(copy.deepcopy(base), mz.Int8())
    measure("all-MiniLM-L6-v2", "Int8 dynamic (W8A8)", m, fp32, tmp)
    m = mz.quantize(copy.deepcopy(base), mz.WeightOnly(bits=4, group_size=128, method="gptq",
                                                       targets=["Linear"]), calib_data=calib)
    measure("all-MiniLM-L6-v2", "GPTQ 4-bit g128", m, fp32, tmp)


def small_trained(tmp: Path) -> None:
    for kind in ("llama", "gpt2"):
        base, split = trained(kind)
        fp32 = fp32_folder(base, tmp, kind)
        val = val_batch(split)
        calib = [{"input_ids": x} for x, _ in list(split.train)[:4]]
        name = f"{kind} 0.8M (Shakespeare)" if kind == "llama" else "gpt2 0.8M (Shakespeare)"
        if kind == "llama":
            m = mz.quantize(copy.deepcopy(base), mz.WeightOnly(
                bits=4, group_size=32, method="gptq", targets=["Linear"],
                ignore=["re:lm_head"]), calib_data=calib)
            measure(name, "GPTQ 4-bit g32", m, fp32, tmp, val)
            m = mz.quantize(copy.deepcopy(base), mz.Int8(activations="static",
                                                         ignore=["re:lm_head"]),
                            calib_data=calib)
            measure(name, "Int8 static (W8A8)", m, fp32, tmp, val)
        else:  # GPT-2's blocks are transformers Conv1D layers, not Linear
            m = mz.quantize(copy.deepcopy(base), mz.WeightOnly(
                bits=4, group_size=32, targets=["Conv1D"]))
            measure(name, "RTN 4-bit g32 (Conv1D)", m, fp32, tmp, val)


def representative(tmp: Path) -> None:
    import transformers as tf

    for vocab in (4096, 32000):
        torch.manual_seed(0)
        cfg = llama_cfg(vocab, hidden=512, layers=8, inter=1536, heads=8, kv=8)
        base = tf.LlamaForCausalLM(cfg).eval()
        name = f"llama h512 L8 vocab {vocab}"
        fp32 = fp32_folder(base, tmp, name)
        m = mz.quantize(base, mz.WeightOnly(bits=4, group_size=128, targets=["Linear"],
                                            ignore=["re:lm_head"]))
        measure(name, "RTN 4-bit g128 (W4A16)", m, fp32, tmp, entropy="none")


SECTIONS = {"representative": representative, "trained": small_trained, "minilm": minilm}


def main() -> None:
    """All sections, or those named on the command line; each section writes its own
    results file (hf_export_<section>.json), so sections can run as separate processes."""
    torch.set_num_threads(2)
    for name in sys.argv[1:] or list(SECTIONS):
        ROWS.clear()
        with tempfile.TemporaryDirectory(prefix="mz-hf-bench-") as d:
            SECTIONS[name](Path(d))
        report(name)


def report(section: str) -> None:
    write_result(
        f"hf_export_{section}", f"Hugging Face folders out ({section}): bytes and outputs "
        "through transformers",
        [{"title": "bytes of each folder (model.safetensors + config + kept tokenizer files); "
                   "outputs of the compressed-tensors (c-t) folder loaded by transformers in a "
                   "fresh process against modelzip's on the same inputs", "columns": COLS,
          "rows": ROWS}],
        notes=["fp32 folder: the uncompressed model exported by mz.save_pretrained (same kept "
               "files). Embeddings and the output head stay fp32 in compressed-tensors "
               "folders, as the format and vLLM have them; the c-t / fp32 ratio therefore "
               "depends on how much of the model is embeddings (vocab 4096 against 32000).",
               "W8A8 rows: transformers quantizes activations itself (per-token range / 127.5 "
               "dynamic, or the exported static scale and zero point), modelzip with its own "
               "int8 kernels (per-token range / 127); the head is kept dense in the folder. "
               "Verification allows 3x modelzip's own activation quantization error.",
               "GPT-2: transformers' GPT-2 uses Conv1D layers, which compressed-tensors does "
               "not quantize (it targets Linear): its 4-bit model exports dense only.",
               "The .mzip of the h512 rows is written without entropy coding (raw packed "
               "streams, entropy='none') to keep the run short; the others use the default.",
               "Every dense and compressed-tensors folder passed the fresh-process check "
               "(clean load report, outputs within tolerance) before its bytes were taken."],
        script="hf_export")


if __name__ == "__main__":
    main()
