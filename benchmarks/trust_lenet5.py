"""Trust, classifiers: LeNet-5 on Fashion-MNIST through six compression methods, each
measured on the model loaded back from its .mzip against the fp32 original: overall and
worst-class drop, top-1 agreement, ECE change, KL, and accuracy under Gaussian noise,
FGSM and PGD (white-box on each model; integer layers through the straight-through
estimator). Cheap settings (a few minutes on 2 shared cores): short fine-tunes."""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any

import torch
from common import RESULTS, fashion, fmt, trained_lenet5, write_result

import modelzip as mz
from modelzip.trust.robustness import robustness

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")
STD = 0.3530                          # Fashion-MNIST normalisation: input = (pixel - m) / STD
EPS_PIXELS = (0.01, 0.03)             # attack radii in pixel units (0..1)
SIGMA_PIXELS = (0.1, 0.2)             # Gaussian noise std in pixel units
COLLAPSED = 0.2                       # methods losing more overall are left out of the plot
ROBUST = {"eps": tuple(e / STD for e in EPS_PIXELS),
          "sigmas": tuple(s / STD for s in SIGMA_PIXELS), "pgd_steps": 5, "samples": 1000}


def methods(base: torch.nn.Module, data: Any) -> dict[str, torch.nn.Module]:
    calib = [b for _, b in zip(range(16), data.train, strict=False)]
    out = {}
    dc = copy.deepcopy(base)
    mz.deep_compression(dc, data.train, sparsity={"0": 0.34, "3": 0.88, "7": 0.93, "9": 0.81},
                        steps=2, prune_epochs=0.5, recover_epochs=0.5, conv_bits=6, fc_bits=4,
                        cluster_epochs=0.5, progress=False)
    out["deep compression (prune + cluster 6/4 bit)"] = dc
    out["2-bit weights (RTN, per channel)"] = mz.quantize(
        copy.deepcopy(base), mz.WeightOnly(bits=2, group_size=None))
    q2 = mz.quantize(copy.deepcopy(base), mz.QAT(bits=2))
    mz.train(q2, data.train, epochs=1, lr=1e-3, progress=False)
    out["2-bit weights (QAT, 1 epoch)"] = mz.convert(q2)
    binq = mz.quantize(copy.deepcopy(base), mz.QAT(bits=1))
    mz.train(binq, data.train, epochs=1, lr=1e-3, progress=False)
    out["binary weights (QAT, 1 epoch)"] = mz.convert(binq)
    st = mz.prune(copy.deepcopy(base), mz.Structured(ratio=0.5),
                  example_inputs=calib[0][0][:1])
    mz.finetune(st, data.train, epochs=1, lr=5e-4, progress=False)
    out["structured 50% (L1, 1 epoch fine-tune)"] = st
    out["int8 W8A8 static (MSE observer)"] = mz.quantize(
        copy.deepcopy(base), mz.Int8(activations="static", observer="mse"), calib_data=calib)
    return out


def robust_cells(rob: dict[str, Any]) -> list[Any]:
    return ([fmt(100 * p["accuracy"], 2) for p in rob["noise"]]
            + [fmt(100 * p["accuracy"], 2) for p in rob["fgsm"]]
            + [fmt(100 * p["accuracy"], 2) for p in rob["pgd"]])


def measure(base: torch.nn.Module, data: Any) -> tuple[dict[str, Any], dict[str, int], int]:
    """Every method's trust dict (robustness included), file bytes, and the fp32 bytes."""
    rob_o = robustness(base, data.test, **ROBUST)
    reports, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = mz.save(base, os.path.join(tmp, "fp32.mzip"))
        for name, model in methods(base, data).items():
            path = os.path.join(tmp, "m.mzip")
            sizes[name] = mz.save(model, path, half=name.startswith("deep"))
            loaded = mz.load(path)
            rep = mz.trust(base, loaded, data.test, robustness=False)
            rep["robustness"] = {"original": rob_o,
                                 "compressed": robustness(loaded, data.test, **ROBUST)}
            reports[name] = rep
    return reports, sizes, fp32


def trust_row(name: str, rep: dict[str, Any], size: int, fp32: int) -> list[Any]:
    w, rob = rep["worst_class"], rep["robustness"]
    return [name, size, fmt(fp32 / size, 1), fmt(100 * rep["acc_compressed"], 2),
            fmt(100 * rep["drop"], 2), CLASSES[w["class"]], fmt(100 * w["drop"], 2),
            fmt(100 * rep["agreement"], 2), fmt(rep["ece_original"], 4),
            fmt(rep["ece_compressed"], 4), fmt(rep["ece_change"], 4), fmt(rep["kl_mean"], 4),
            *[f"{100 * a['accuracy']:.1f} / {100 * b['accuracy']:.1f}"
              for a, b in zip(rob["original"]["fgsm"], rob["compressed"]["fgsm"])]]


def tables(reports: dict[str, Any], sizes: dict[str, int], fp32: int) -> list[dict[str, Any]]:
    first = next(iter(reports.values()))
    rob_o = first["robustness"]["original"]
    rob_rows = [["fp32 original", fmt(100 * rob_o["clean"], 2), *robust_cells(rob_o)]] + [
        [n, fmt(100 * r["robustness"]["compressed"]["clean"], 2),
         *robust_cells(r["robustness"]["compressed"])] for n, r in reports.items()]
    class_rows = [[CLASSES[k], fmt(100 * first["per_class"][k]["acc_original"], 1),
                   *[fmt(100 * r["per_class"][k]["acc_compressed"], 1)
                     for r in reports.values()]] for k in range(10)]
    return [
        {"title": f"10,000 test images; original fp32 accuracy "
                  f"{100 * first['acc_original']:.2f}%, file {fp32:,} bytes; models loaded "
                  "back from their .mzip",
         "columns": ["method", "file bytes", "x smaller", "accuracy %", "drop (points)",
                     "worst class", "worst-class drop (points)", "top-1 agreement %",
                     "ECE original", "ECE compressed", "ECE change", "KL(o||c)",
                     *[f"FGSM eps={e:g} px: original / compressed %" for e in EPS_PIXELS]],
         "rows": [trust_row(n, r, sizes[n], fp32) for n, r in reports.items()]},
        {"title": "Per-class accuracy % (original, then each compressed model)",
         "columns": ["class", "original", *reports], "rows": class_rows},
        {"title": f"Accuracy % under noise and white-box attacks (first "
                  f"{ROBUST['samples']} test images; PGD {ROBUST['pgd_steps']} steps)",
         "columns": ["model", "clean", *[f"noise sigma={s:g} px" for s in SIGMA_PIXELS],
                     *[f"FGSM eps={e:g} px" for e in EPS_PIXELS],
                     *[f"PGD eps={e:g} px" for e in EPS_PIXELS]], "rows": rob_rows}]


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    reports, sizes, fp32 = measure(trained_lenet5().eval(), fashion())
    worst_name, worst = max(reports.items(), key=lambda kv: kv[1]["max_class_drop"])
    write_result(
        "trust_lenet5", "Trust (classifier): LeNet-5 on Fashion-MNIST, six methods",
        tables(reports, sizes, fp32),
        notes=[f"Largest single-class loss: {worst_name}, class "
               f"{CLASSES[worst['worst_class']['class']]} "
               f"{100 * worst['max_class_drop']:.2f} points against "
               f"{100 * worst['drop']:.2f} overall.",
               "ECE: 15 equal-width confidence bins. KL: mean over test images of "
               "KL(softmax original || softmax compressed), nats.",
               "Radii and noise are in pixel units (0..1) and divided by the normalisation "
               f"std {STD} for the model's input. Integer layers (int8 static) are attacked "
               "through a straight-through estimator: exact integer forward, gradient of "
               "the same layer in float with the dequantized weights (which can overstate "
               "an int8 model's robustness: see docs/trust.md).",
               "Cheap settings: deep compression runs 2 prune steps of half an epoch, half "
               "an epoch of recovery and of centroid fine-tuning (the full pipeline is "
               "benchmarks/deep_compression_lenet5.py)."],
        extra={"reports": {k: {kk: vv for kk, vv in v.items() if kk != "reliability"}
                           for k, v in reports.items()}})
    plot(reports, RESULTS / "trust_lenet5.png")


def plot(reports: dict[str, dict[str, Any]], path: os.PathLike) -> None:
    """Per-class drop (points) of every method: where each one loses accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    collapsed = [n for n, r in reports.items() if r["drop"] > COLLAPSED]
    reports = {n: r for n, r in reports.items() if n not in collapsed}
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(reports)
    for i, (name, rep) in enumerate(reports.items()):
        ax.bar([k + (i - len(reports) / 2 + 0.5) * width for k in range(10)],
               [100 * r["drop"] for r in rep["per_class"]], width, label=name)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(10), CLASSES, rotation=30, fontsize=8)
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title("LeNet-5 / Fashion-MNIST: per-class accuracy drop after compression"
                 + (f"\n(not shown, collapsed: {', '.join(collapsed)})" if collapsed else ""),
                 fontsize=10)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
