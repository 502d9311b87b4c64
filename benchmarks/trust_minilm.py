"""Trust, encoders: all-MiniLM-L6-v2 with int8 (W8A8 dynamic) and 4-bit weights against
fp32: the distribution of the per-sentence cosine to the original embedding (mean, 5th
and 1st percentiles, min) and the sentences that moved most. Measured on the models
loaded back from their .mzip files."""

from __future__ import annotations

import copy
import os
import tempfile
import warnings

import torch
from _quant_common import N_EVAL, minilm
from common import fmt, write_result

import modelzip as mz

WORST = 5


def methods(model: torch.nn.Module, calib: list[dict]) -> dict[str, torch.nn.Module]:
    return {
        "int8 W8A8 dynamic": mz.quantize(copy.deepcopy(model), mz.Int8()),
        "4-bit weights RTN (group 128)": mz.quantize(
            copy.deepcopy(model), mz.WeightOnly(bits=4, group_size=128, targets=["Linear"])),
        "4-bit weights GPTQ (group 128)": mz.quantize(
            copy.deepcopy(model), mz.WeightOnly(bits=4, group_size=128, method="gptq",
                                                targets=["Linear"]), calib_data=calib),
    }


def sentence_of(tok: object, evals: list[dict], index: int) -> str:
    """The text of example ``index`` of the batched eval set (decoded back)."""
    for batch in evals:
        n = batch["input_ids"].shape[0]
        if index < n:
            ids = batch["input_ids"][index][batch["attention_mask"][index].bool()]
            return tok.decode(ids, skip_special_tokens=True)
        index -= n
    raise IndexError(index)


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model, tok, evals, calib = minilm()
    rows, worst_rows, reports = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32_bytes = mz.save(model, os.path.join(tmp, "fp32.mzip"))
        for name, q in methods(model, calib).items():
            path = os.path.join(tmp, "q.mzip")
            size = mz.save(q, path)
            loaded = mz.load(path)
            rep = mz.trust(model, loaded, evals)
            reports[name] = rep
            rows.append([name, size, fmt(fp32_bytes / size, 2), fmt(rep["cos_mean"], 5),
                         fmt(rep["cos_median"], 5), fmt(rep["cos_p5"], 5),
                         fmt(rep["cos_p1"], 5), fmt(rep["cos_min"], 5)])
            for w in rep["worst"][:WORST]:
                text = sentence_of(tok, evals, w["index"])
                worst_rows.append([name, fmt(w["cosine"], 5), text[:90]])
    write_result(
        "trust_minilm", "Trust (encoder): all-MiniLM-L6-v2, cosine to the fp32 embedding",
        [{"title": f"{N_EVAL} Tiny Shakespeare sentences, mean-pooled sentence embeddings; "
                   f"fp32 file {fp32_bytes:,} bytes",
          "columns": ["model (loaded from .mzip)", "file bytes", "x smaller", "mean cosine",
                      "median", "5th percentile", "1st percentile", "min"],
          "rows": rows},
         {"title": f"The {WORST} sentences whose embedding moved most, per model",
          "columns": ["model", "cosine", "sentence (first 90 characters)"],
          "rows": worst_rows}],
        notes=["mz.trust(original, compressed, batches) with batches of tokenised sentences "
               "(no labels): the encoder task; cosine per sentence of the attention-mask "
               "mean-pooled last hidden state (the all-MiniLM-L6-v2 embedding before "
               "normalisation, which cosine ignores).",
               "4-bit: every Linear layer (embeddings stay fp32), as in quant_minilm_gptq; "
               "int8: Int8Linear layers plus int8 embedding rows, as in quant_minilm_int8.",
               "The mean hides the tail: the 1st percentile and the minimum show the "
               "sentences a retrieval index would misplace first."],
        extra={"reports": {k: {kk: vv for kk, vv in v.items() if kk != "histogram"}
                           for k, v in reports.items()}})


if __name__ == "__main__":
    main()
