"""Acceptance 2: tiny_gpt on Tiny Shakespeare, 4-bit and 3-bit weight-only (group 128 or
the layer width when smaller): validation perplexity of RTN, GPTQ, AWQ against fp32."""

from __future__ import annotations

import copy
import time

import torch
from common import fmt, shakespeare, trained_tiny_gpt, write_result

import modelzip as mz
from modelzip.measure import file_bytes

CALIB_BATCHES = 8


def main() -> None:
    torch.set_num_threads(1)
    base = trained_tiny_gpt()
    split = shakespeare(128, 32)
    calib = [b for _, b in zip(range(CALIB_BATCHES), split.train, strict=False)]
    fp32 = mz.perplexity(base, split.test)
    rows = [["fp32", "-", fmt(fp32, 3), "-", fmt(file_bytes(base) / 1e3, 1)]]
    ppl: dict[tuple[int, str], float] = {}
    for bits in (4, 3):
        for method in ("rtn", "gptq", "awq"):
            m = copy.deepcopy(base)
            t0 = time.perf_counter()
            mz.quantize(m, mz.WeightOnly(bits=bits, group_size=128, method=method,
                                         targets=["re:blocks\\..*"]),
                        calib_data=calib if method != "rtn" else None)
            sec = time.perf_counter() - t0
            ppl[bits, method] = mz.perplexity(m, split.test)
            rows.append([f"{bits}-bit", method.upper(), fmt(ppl[bits, method], 3),
                         fmt(sec, 1), fmt(file_bytes(m) / 1e3, 1)])
    def beats(b: int, method: str) -> str:
        return "beats" if ppl[b, method] < ppl[b, "rtn"] else "does NOT beat"

    verdict = [f"{b}-bit: GPTQ {ppl[b, 'gptq']:.3f}, AWQ {ppl[b, 'awq']:.3f} vs RTN "
               f"{ppl[b, 'rtn']:.3f}: GPTQ {beats(b, 'gptq')} RTN, AWQ {beats(b, 'awq')} RTN"
               for b in (4, 3)]
    write_result(
        "quant_tiny_gpt", "tiny_gpt (Tiny Shakespeare): 4/3-bit RTN vs GPTQ vs AWQ",
        [{"title": "validation perplexity; weight-only, symmetric, group 128 (128 + 64 on "
                   "192-wide inputs); Linear layers of the transformer blocks",
          "columns": ["weights", "method", "val perplexity", "quantize s", "file KB"],
          "rows": rows}],
        anchors=["GPTQ paper (Frantar et al. 2023), OPT-125M 4-bit, WikiText2 perplexity: "
                 "fp16 27.65, RTN 37.28, GPTQ 31.12.",
                 "Issue target: GPTQ and AWQ must beat RTN."],
        notes=verdict + [
            f"Calibration: {CALIB_BATCHES} training batches of 32 x 128 characters; "
            "block-by-block (later blocks see earlier blocks already quantized).",
            "Token/position embeddings and the LM head stay fp32 (the GPTQ protocol "
            "quantizes the transformer blocks' Linear layers)."])


if __name__ == "__main__":
    main()
