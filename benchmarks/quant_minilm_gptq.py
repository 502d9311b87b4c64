"""Acceptance 4: GPTQ 4-bit (group 128) of all-MiniLM-L6-v2 on 2 CPU cores, with RTN and
AWQ beside it (time and embedding cosine vs fp32)."""

from __future__ import annotations

import copy
import time
import warnings

import torch
from _quant_common import N_CALIB, N_EVAL, cosine, minilm
from common import fmt, write_result

import modelzip as mz
from modelzip.io import hf
from modelzip.measure import file_bytes


def timed_quantize(model: torch.nn.Module, method: str, calib: list, threads: int
                   ) -> tuple[torch.nn.Module, float]:
    torch.set_num_threads(threads)
    m = copy.deepcopy(model)
    t0 = time.perf_counter()
    mz.quantize(m, mz.WeightOnly(bits=4, group_size=128, method=method, targets=["Linear"]),
                calib_data=calib if method != "rtn" else None)
    sec = time.perf_counter() - t0
    torch.set_num_threads(1)
    return m, sec


def main() -> None:
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model, _, evals, calib = minilm()
    ref = hf.sentence_embeddings(model, evals)
    rows, secs = [], {}
    for method in ("rtn", "gptq", "awq"):
        m, secs[method] = timed_quantize(model, method, calib, 1)
        mean, low = cosine(hf.sentence_embeddings(m, evals), ref)
        rows.append([method.upper(), fmt(secs[method], 1), fmt(mean, 4), fmt(low, 4),
                     fmt(file_bytes(m) / 1e6, 2)])
    _, two = timed_quantize(model, "gptq", calib, 2)
    rows.append(["GPTQ, 2 threads", fmt(two, 1), "-", "-", "-"])
    rows.append(["fp32", "-", 1.0, 1.0, fmt(file_bytes(model) / 1e6, 2)])
    write_result(
        "quant_minilm_gptq", "all-MiniLM-L6-v2: 4-bit weight-only (g128) GPTQ/AWQ/RTN time",
        [{"title": f"all Linear layers, 4-bit symmetric, group 128; calibration "
                   f"{N_CALIB} sentences; cosine on {N_EVAL} others; 1 thread unless noted",
          "columns": ["method", "seconds", "mean cosine vs fp32", "min cosine", "file MB"],
          "rows": rows}],
        anchors=["Issue target: GPTQ 4-bit of MiniLM in at most 60 s on the 2 CPU cores.",
                 "GPTQ paper (Frantar et al. 2023): small models quantize in under "
                 "1 minute on one A100."],
        notes=[f"GPTQ took {secs['gptq']:.1f} s with 1 thread (target 60 s: "
               f"{'met' if secs['gptq'] <= 60 else 'MISSED'}) and {two:.1f} s with 2 threads, "
               "including the block-by-block calibration passes (7 forward passes over "
               "the calibration set), on a 2-core machine shared with other jobs.",
               "With 2 threads on the oversubscribed machine, small multithreaded ops wait on "
               "descheduled threads (cholesky_inverse measured 200x slower); the GPTQ solver "
               "therefore always runs its column sweep and inversion on one thread.",
               "Embeddings and the pooler's float parts (LayerNorm, biases) stay fp32."])


if __name__ == "__main__":
    main()
