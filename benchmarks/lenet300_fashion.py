"""LeNet-300-100 on Fashion-MNIST: fp32 baseline, then 90% magnitude pruning (gradual,
with fine-tuning) + 8-bit weight codes; accuracy of the model loaded from the .mzip."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import torch
from common import fashion, fmt, trained_lenet300, write_result

import modelzip as mz
from modelzip.measure import fp32_bytes, model_latency


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    split = fashion()
    model = trained_lenet300()
    base_acc = mz.accuracy(model, split.test)
    baseline = copy.deepcopy(model)
    t0 = time.time()
    mz.pruning.iterative_prune(model, mz.Magnitude(sparsity=0.9, scope="global"), split.train,
                               steps=4, epochs_per_step=1, lr=5e-4, progress=False)
    mz.finetune(model, split.train, epochs=2, lr=2e-4, progress=False)
    mz.quantize(model, mz.WeightOnly(bits=8, group_size=None))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lenet300.mzip"
        size = mz.save(model, path)
        loaded = mz.load(path)
    wall = time.time() - t0
    acc = mz.accuracy(loaded, split.test)
    params, nonzeros = mz.count_params(loaded)
    base_bytes = fp32_bytes(baseline)
    x = next(iter(split.test))[0][:1]
    lat_b = model_latency(baseline, x, repeats=200, num_threads=1)
    lat_c = model_latency(loaded, x, repeats=200, num_threads=1)
    rows = [
        ["fp32 baseline", fmt(100 * base_acc, 2), params, params, base_bytes, 1.0, 1.0],
        ["90% pruned + int8 codes (loaded)", fmt(100 * acc, 2), params, nonzeros, size,
         fmt(base_bytes / size, 2), fmt(lat_b / lat_c, 2)],
    ]
    write_result(
        "lenet300_fashion", "LeNet-300-100 on Fashion-MNIST: baseline and 90% pruning + 8-bit",
        [{"columns": ["model", "test accuracy %", "params", "nonzeros", "file bytes",
                      "size ratio", "latency ratio (batch 1)"], "rows": rows}],
        anchors=["scikit-learn benchmark, MLPClassifier [100]: 87.1% (Fashion-MNIST README)",
                 "MLP 256-128-64: 90.0% (Fashion-MNIST README benchmark)"],
        notes=[f"Baseline: 20 epochs Adam, cosine schedule (benchmarks/common.py). "
               f"Compression: 4 cubic pruning steps x 1 epoch + 2 epochs fine-tune; "
               f"wall {wall:.0f}s on 1 thread.",
               "Latency ratio: baseline / compressed at batch 1, 1 thread, median of 200; "
               "unstructured sparsity with dequantized weights brings no CPU speed-up "
               "(structured pruning and int8 execution do: see their sections)."],
        extra={"baseline_accuracy": base_acc, "accuracy": acc, "ratio": base_bytes / size},
    )


if __name__ == "__main__":
    main()
