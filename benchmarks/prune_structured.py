"""Acceptance 2: structured pruning (50% of channels) of LeNet-5 and a ResNet-style CNN.

Both on Fashion-MNIST; accuracy before, after pruning and after fine-tuning, parameters,
MACs and CPU latency of the dense and the pruned model measured side by side in one run.
"""

from __future__ import annotations

import copy
import statistics

import torch
from common import CACHE, fashion, fmt, trained_lenet5, write_result

import modelzip as mz
from modelzip.measure import count_macs, model_latency

RESNET = {"epochs": 2, "lr": 2e-3, "channels": [16, 32, 64], "stem_stride": 2}


def trained_resnet(split) -> torch.nn.Module:
    """resnet_small trained once on Fashion-MNIST, cached as plain safetensors."""
    from safetensors.torch import load_file, save_file

    path = CACHE / "resnet_small_fashion_s2.safetensors"
    model = mz.zoo.resnet_small(channels=RESNET["channels"], stem_stride=RESNET["stem_stride"])
    if path.exists():
        model.load_state_dict(load_file(path))
        return model.eval()
    torch.manual_seed(0)
    mz.train(model, split.train, epochs=RESNET["epochs"], lr=RESNET["lr"])
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), path)
    return model.eval()


def side_by_side(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor,
                 rounds: int = 7) -> tuple[float, float]:
    """Median latencies of ``a`` and ``b``, measured alternately (1 thread)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(model_latency(a, x, repeats=10, num_threads=1))
        tb.append(model_latency(b, x, repeats=10, num_threads=1))
    return statistics.median(ta), statistics.median(tb)


def run(name: str, dense: torch.nn.Module, split, epochs: float, lr: float) -> list:
    x = next(iter(split.test))[0][:64]
    acc0 = mz.accuracy(dense, split.test)
    model = copy.deepcopy(dense)
    mz.prune(model, mz.Structured(0.5), example_inputs=x)
    acc_pruned = mz.accuracy(model, split.test)
    mz.finetune(model, split.train, epochs=epochs, lr=lr, progress=False)
    acc1 = mz.accuracy(model, split.test)
    t0, t1 = side_by_side(dense.eval(), model.eval(), x)
    p0, p1 = mz.count_params(dense)[0], mz.count_params(model)[0]
    m0, m1 = count_macs(dense, x), count_macs(model, x)
    row = [name, fmt(100 * acc0, 2), fmt(100 * acc_pruned, 2), fmt(100 * acc1, 2),
           fmt(100 * (acc0 - acc1), 2), p0, p1, m0, m1, fmt(1e3 * t0, 3), fmt(1e3 * t1, 3),
           fmt(t0 / t1, 2), f"{epochs} ep, lr {lr}"]
    print(row, flush=True)
    return row


def report(rows: list) -> None:
    write_result(
        "prune_structured", "Structured pruning: 50% of channels removed, real speed-up",
        [{"title": "Fashion-MNIST; latency = median forward time of a 64-image batch, "
                   "1 thread, dense and pruned measured alternately in the same run",
          "columns": ["model", "dense acc %", "pruned acc %", "fine-tuned acc %",
                      "drop (pt)", "params dense", "params pruned", "MACs dense",
                      "MACs pruned", "dense ms", "pruned ms", "speed-up x", "fine-tune"],
          "rows": rows}],
        anchors=["Target (issue 3): at least 1.6x faster on CPU at at most 1 point accuracy "
                 "drop after fine-tuning, with 50% of channels removed.",
                 "Li et al. 2017 (L1 filter pruning): VGG-16 on CIFAR-10, 34% fewer FLOPs "
                 "at no accuracy loss; ResNet-56 27% fewer FLOPs."],
        notes=["mz.Structured(0.5, criterion='l1'): every prunable channel group loses half "
               "its channels (residual-coupled channels together); the classifier outputs "
               "and the input stay. The pruned model is a plain smaller nn.Module.",
               f"ResNet-small: channels {RESNET['channels']}, one BasicBlock per stage, stem "
               f"stride {RESNET['stem_stride']}, trained here for {RESNET['epochs']} epochs "
               f"(Adam {RESNET['lr']}); LeNet-5: the cached reference (benchmarks/common.py).",
               "'pruned acc' is before any fine-tuning (BatchNorm statistics are stale "
               "right after pruning); fine-tuning: Adam with cosine decay (epochs, lr).",
               "Rows are written as they finish; a missing row was still waiting for its "
               "cached reference model."])


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    split = fashion()
    rows = [run("ResNet-small (BN, residual)", trained_resnet(split), split, epochs=4, lr=2e-3)]
    report(rows)
    rows.append(run("LeNet-5", trained_lenet5(), split, epochs=4, lr=1e-3))
    report(rows)


if __name__ == "__main__":
    main()
