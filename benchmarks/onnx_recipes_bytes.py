"""Issue 14, benchmark 4: ONNX bytes of every built-in recipe's output beside its .mzip
and the dense fp32 ONNX, with the form each compressed layer takes in the ONNX file.

Transform stages and QAT's convert only (fine-tune / distill / evaluate steps skipped:
they change accuracy, not the layer forms or bytes); reference models: the cached trained
LeNet-5 and tiny_gpt, mlp128 trained for one epoch here. Every export is verified in
ONNX Runtime (fresh process)."""

from __future__ import annotations

import tempfile
import warnings
from collections import Counter
from pathlib import Path

import torch
from common import fashion, fmt, shakespeare, trained_lenet5, trained_tiny_gpt, write_result

import modelzip as mz
from modelzip.config import Config
from modelzip.pipeline.recipe import Recipe, builtin_recipes
from modelzip.pipeline.steps import Convert, StepConfig


def reference(name: str):
    """(model, calibration batches, example input) for a recipe's reference model."""
    if name == "tiny_gpt":
        split = shakespeare(128, 8)
        calib = [b for _, b in zip(range(4), split.train, strict=False)]
        return trained_tiny_gpt(), calib, next(iter(split.test))[0][:1]
    if "MiniLM" in name:
        from modelzip.io import hf

        path = hf.minilm_path()
        batches = hf.encode_batches(hf.tokenizer(path), mz.data.sentences(64), batch_size=16)
        return hf.load_pretrained(path), batches[:3], batches[3]
    split = fashion()
    calib = [b for _, b in zip(range(8), split.train, strict=False)]
    x = next(iter(split.test))[0][:8]
    if name == "lenet5":
        return trained_lenet5(), calib, x
    torch.manual_seed(0)
    model = mz.zoo.build(name)
    mz.train(model, split.train, epochs=1, lr=1e-3, progress=False)
    return model, calib, x


def forms(summary) -> str:
    kinds = Counter(v.split(",")[0] for v in summary.integer_layers.values())
    dense = Counter(v.split(" (")[0].split(":")[0] for v in summary.dense_layers.values())
    parts = [f"{n}x {k}" for k, n in kinds.items()] + [f"{n}x dense: {k}"
                                                        for k, n in dense.items()]
    return "; ".join(parts) or "dense fp32"


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows, cache = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(builtin_recipes()):
            recipe = Recipe.load(name)
            ref = recipe.model or "lenet5"
            if ref not in cache:
                cache[ref] = reference(ref)
            base, calib, x = cache[ref]
            model = __import__("copy").deepcopy(base)
            for stage in recipe.stages:  # training steps skipped; QAT's convert kept
                if isinstance(stage, Config) and (not isinstance(stage, StepConfig)
                                                  or isinstance(stage, Convert)):
                    mz.apply(model, stage, calib_data=calib, example_inputs=x)
            s = mz.export_onnx(model, Path(tmp) / f"{name}.onnx", x)
            rows.append([name, ref, s.mzip_bytes, s.file_bytes, s.fp32_onnx_bytes,
                         fmt(s.file_bytes / s.fp32_onnx_bytes, 3),
                         fmt(s.check["rel"], 5), forms(s)])
            print(rows[-1], flush=True)
    write_result(
        "onnx_recipes_bytes", "Built-in recipes: ONNX bytes beside .mzip and dense fp32 ONNX",
        [{"title": "transform stages of each recipe on its reference model; ONNX checked in "
                   "ONNX Runtime in a fresh process (normwise relative error vs modelzip)",
          "columns": ["recipe", "model", ".mzip bytes", "ONNX bytes", "fp32 ONNX bytes",
                      "ONNX / fp32 ONNX", "ORT rel. error", "layer forms in the ONNX file"],
          "rows": rows}],
        notes=["Sparse (Magnitude, 2:4, Wanda) and clustered layers have no ONNX Runtime "
               "kernels: they export dense fp32 (or fp16 with fp16=True), so their ONNX file "
               "is the fp32 size while the .mzip stays small. Structured pruning exports "
               "the smaller graph. Quantized layers keep integer weights."])


if __name__ == "__main__":
    main()
