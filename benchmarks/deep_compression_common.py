"""Shared by the Deep Compression benchmarks: run the pipeline on a cached reference
model, save each stage, measure accuracy on the model LOADED FROM THE FILE, and compare
Huffman with zstd and lzma on exactly the same streams."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import fashion, fmt, write_result

import modelzip as mz
from modelzip.io.inspect import layer_table, stream_symbols
from modelzip.io.mzip import read_contents
from modelzip.io.streams import coder, coders
from modelzip.measure import fp32_bytes


def _stage(model: torch.nn.Module, fresh: Any, path: Path, test: Any, **save_kw: Any
           ) -> dict[str, Any]:
    size = mz.save(model, path, **save_kw)
    loaded = mz.load(path, model=fresh())
    return {"bytes": size, "acc": mz.accuracy(loaded, test)}


def coder_table(path: Path) -> list[list[Any]]:
    """Bytes per stream role for the fixed-width packing and each coder."""
    names = [c for c in coders() if c != "raw"]
    totals: dict[str, dict[str, int]] = {}
    for s in stream_symbols(read_contents(path)):
        row = totals.setdefault(s["role"], dict.fromkeys(["raw", *names], 0))
        for name in ["raw", *names]:
            data = coder(name).encode(s["symbols"], s["bits"]) if s["symbols"].size else b""
            row[name] += len(data) if data is not None else len(
                coder("raw").encode(s["symbols"], s["bits"]))
    return [[role, *[v[n] for n in ["raw", *names]]] for role, v in totals.items()], names


def run(name: str, title: str, trained: Any, fresh: Any, sparsity: float | dict[str, float],
        anchors: list[str], paper: dict[str, float], epochs: float, steps: int = 4,
        conv_bits: int = 8, fc_bits: int = 5, recover_epochs: float = 0.0,
        cluster_epochs: float | None = None, distill: dict[str, float] | None = None
        ) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    split = fashion()
    model = trained()
    base_acc = mz.accuracy(model, split.test)
    fp32 = fp32_bytes(model)
    tmp = Path(tempfile.mkdtemp())
    t0 = time.time()
    work = copy.deepcopy(model)
    mz.deep_compression(work, split.train, sparsity=sparsity, steps=steps,
                              prune_epochs=epochs, conv_bits=conv_bits, fc_bits=fc_bits,
                              recover_epochs=recover_epochs, **({} if distill is None else
                                 {"teacher": copy.deepcopy(model), **distill}),
                              cluster_epochs=cluster_epochs or epochs, progress=False,
                              on_stage=lambda stage, m: _stages.setdefault(
                                  stage, _stage(m, fresh, tmp / f"{stage}.mzip", split.test,
                                                entropy="none", half=stage == "clustered")))
    minutes = (time.time() - t0) / 60
    final = tmp / "final.mzip"
    huff = _stage(work, fresh, final, split.test, entropy="huffman", half=True)
    best = _stage(work, fresh, tmp / "auto.mzip", split.test, entropy="auto", half=True)
    pruned, clustered = _stages["pruned"], _stages["clustered"]
    rows = [["baseline fp32", fp32, 1.0, base_acc, 0.0, None]]
    for label, st, key in (("pruning only", pruned, "prune"),
                           ("+ clustering", clustered, "cluster"),
                           ("+ Huffman (whole .mzip)", huff, "huffman")):
        rows.append([label, st["bytes"], fp32 / st["bytes"], st["acc"],
                     100 * (base_acc - st["acc"]), paper.get(key)])
    rows.append(["best coder per stream (auto)", best["bytes"], fp32 / best["bytes"],
                 best["acc"], 100 * (base_acc - best["acc"]), None])
    layers, totals = layer_table(read_contents(final))
    cols = ["layer", "weights", "kept %", "weight bits", "index bits", "weight bits (Huffman)",
            "index bits (Huffman)", "bytes"]
    lrows = [[r["layer"], r["weights"], 100 * r["kept"], r["weight_bits"], r["index_bits"],
              r["weight_bits_huffman"], r["index_bits_huffman"], r["bytes"]]
             for r in layers + [totals]]
    crow, names = coder_table(final)
    ratio = fp32 / huff["bytes"]
    drop = 100 * (base_acc - huff["acc"])
    write_result(name, title, [
        {"title": "Stages (accuracy of the model loaded from each file, Fashion-MNIST test)",
         "columns": ["stage", "file bytes", "ratio", "accuracy", "drop (points)",
                     "paper ratio"], "rows": [[fmt(v) for v in r] for r in rows]},
        {"title": "Per layer, final file (Deep Compression Table 2 layout)",
         "columns": cols, "rows": [[fmt(v) for v in r] for r in lrows]},
        {"title": "Same streams, bytes per coder (fixed-width packing vs entropy coders)",
         "columns": ["stream role", "fixed width", *names], "rows": crow},
    ], anchors=anchors, notes=[
        f"headline: {ratio:.1f}x at {drop:.2f} points drop (target >= {paper['target']}x, "
        f"<= 0.5 points): {'met' if ratio >= paper['target'] and drop <= 0.5 else 'NOT met'}",
        f"sparsity {sparsity} (a float ranks all weights globally; per layer: see the "
        f"table); {1 << conv_bits} clusters for conv, {1 << fc_bits} "
        f"for fc; {steps} prune steps x {epochs} epoch(s), recovery {recover_epochs} "
        f"epoch(s), centroid fine-tune {cluster_epochs or epochs} epoch(s); pipeline time "
        f"{minutes:.1f} min on a shared 2-core CPU",
        f"fine-tunes distill from the dense reference: {distill}" if distill else
        "fine-tunes use the labels only (no distillation)",
        "clustered stages store biases and codebooks as fp16 (half=True); the pruning-only "
        "stage stores fp32 values. Ratio = fp32 bytes of all weights and biases over the "
        "whole .mzip file (container, manifest, every stream).",
    ])


_stages: dict[str, dict[str, Any]] = {}
