"""Helpers shared by the quant_* benchmarks: MiniLM setup, fidelity, interleaved timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import common  # noqa: F401  (puts src/ on the path)
import torch

import modelzip as mz
from modelzip.io import hf

N_EVAL, N_CALIB = 512, 128


def minilm() -> tuple[Any, Any, list[dict], list[dict]]:
    """(fp32 model, tokenizer, eval batches, calibration batches): different sentences."""
    path = hf.minilm_path()
    tok = hf.tokenizer(path)
    sents = mz.data.sentences(N_CALIB + N_EVAL)
    calib = hf.encode_batches(tok, sents[:N_CALIB])
    evals = hf.encode_batches(tok, sents[N_CALIB:])
    return hf.load_pretrained(path), tok, evals, calib


def cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(mean, min) cosine similarity of row-normalised embeddings."""
    c = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return float(c.mean()), float(c.min())


def interleaved_times(fns: dict[str, Callable[[Any], Any]], batches: list[Any],
                      repeats: int = 3) -> dict[str, float]:
    """Seconds per pass over ``batches`` for each fn: every batch is run by every fn in
    turn, ``repeats`` times, and the fastest run of each (fn, batch) is kept, so that
    load from other processes on a shared machine hits all contenders alike."""
    total = dict.fromkeys(fns, 0.0)
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn(batches[0])
        for batch in batches:
            best = dict.fromkeys(fns, float("inf"))
            for _ in range(repeats):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn(batch)
                    best[name] = min(best[name], time.perf_counter() - t0)
            for name in fns:
                total[name] += best[name]
    return total
