"""NAS acceptance 1: on Fashion-MNIST, find an architecture with at most a tenth of
LeNet-300-100's weights and at least its accuracy, both trained with the same budget;
plot accuracy against weights with the hand-designed zoo models for comparison.

Search: TPE over the CNN space maximising validation accuracy under a hard limit of 10%
of LeNet-300-100's parameters; each trial trains 1 epoch. The most accurate trials (by
validation accuracy) and the accuracy/parameters Pareto front are kept. Then these and the
zoo models
(LeNet-300-100, MLP-128, LeNet-5) are all trained from scratch with the same budget and
scored on the test set.
"""

from __future__ import annotations

import time

import torch
from common import RESULTS, fashion, fmt, write_result

import modelzip as mz

TRAIN_LIMIT = 60_000  # all of Fashion-MNIST's training images; the 10,000 test images
BUDGET = {"epochs": 8, "lr": 3e-3}  # the same for every model in the comparison
TRIALS = 30
RETRAIN = 3  # most accurate trials (by validation) retrained with the full budget


def train_eval(model: torch.nn.Module, train, test, val=None) -> float | tuple[float, float]:
    """Test accuracy after the shared budget (and validation accuracy when ``val``)."""
    torch.manual_seed(0)
    mz.train(model, train, progress=False, **BUDGET)
    acc = mz.accuracy(model, test)
    return acc if val is None else (acc, mz.accuracy(model, val))


def main() -> None:
    torch.set_num_threads(1)
    split = fashion(train_limit=TRAIN_LIMIT)
    train, val = mz.nas.holdout(split.train, 1 / 6)
    lenet300 = mz.zoo.lenet300()
    limit = mz.count_params(lenet300)[0] // 10
    space = mz.nas.space("cnn", split, depth=[1, 2, 3], channels=[8, 16, 32],
                         kernel=[3, 5], hidden=[16, 32, 64], per_layer=["channels"],
                         batchnorm=[False, True], head=["flatten", "gap"])
    t0 = time.perf_counter()
    res = mz.search_architecture(
        space, evaluate=mz.nas.accuracy_on(val), train_data=train, trials=TRIALS,
        strategy="tpe", strategy_options={"n_startup_trials": 6},
        epochs=1, lr=BUDGET["lr"], constraints={"params": limit},
        retrain_epochs=0, threads=1, progress=True)
    search_s = time.perf_counter() - t0

    points = []  # (label, params, test accuracy, kind)
    for name, model in (("LeNet-300-100", lenet300), ("MLP-128", mz.zoo.mlp128()),
                        ("LeNet-5", mz.zoo.lenet5())):
        points.append((name, mz.count_params(model)[0], train_eval(model, train, split.test),
                       "zoo"))
        print(points[-1])
    done = [r for r in res.history if r.get("state") == "complete" and r.get("metric") is not None]
    best = sorted(done, key=lambda r: -r["metric"])[:RETRAIN]
    front = best + [r for r in res.pareto[-3:] if r["number"] not in {b["number"] for b in best}]
    val_acc = {}
    for row in front:
        model = mz.nas.build(space, row["sample"])
        test_acc, val_acc[f"NAS #{row['number']}"] = train_eval(model, train, split.test, val)
        points.append((f"NAS #{row['number']}", row["params"], test_acc, "nas"))
        print(points[-1], row["sample"])
    # the winner is chosen on the validation split; the test set only reports it
    winner = max((p for p in points if p[3] == "nas"), key=lambda p: val_acc[p[0]])
    base = points[0]
    plot(points, limit)
    rows = [[label, params, fmt(100 * acc, 2), f"{params / base[1]:.3f}"]
            for label, params, acc, _ in points]
    met = winner[1] <= limit and winner[2] >= base[2]
    write_result(
        "nas_fashion", "NAS on Fashion-MNIST: a tenth of LeNet-300-100's weights, same accuracy",
        [{"title": f"Test accuracy after the same training budget ({BUDGET['epochs']} epochs, "
                   f"lr {BUDGET['lr']}, {len(train.dataset):,} training images)",
          "columns": ["model", "parameters", "test accuracy %", "params / LeNet-300-100"],
          "rows": rows},
         {"title": "Search", "columns": ["strategy", "trials", "limit (params)",
                                         "search time s", "winner", "target met"],
          "rows": [["tpe", TRIALS, limit, fmt(search_s, 1),
                    winner[0], "yes" if met else "no"]]}],
        anchors=["Issue 8 acceptance 1: at most 1/10 of LeNet-300-100's weights and at "
                 "least its accuracy, both trained with the same budget."],
        notes=[f"Fashion-MNIST: {TRAIN_LIMIT:,} training images "
               f"({len(train.dataset):,} train / {len(val.dataset):,} validation used by the "
               "search); test accuracy on all 10,000 test images.",
               f"Trials train 1 epoch and are scored on the validation split; the {RETRAIN} "
               "most accurate trials, the top of the Pareto front and the zoo models are then "
               "trained from scratch with one shared budget; the winner is the retrained "
               "candidate with the best validation accuracy (the test set only reports).",
               f"Winner {winner[0]}: {winner[1]:,} parameters "
               f"({winner[1] / base[1]:.3f} of LeNet-300-100), {100 * winner[2]:.2f}% vs "
               f"{100 * base[2]:.2f}% — target {'met' if met else 'NOT met'}.",
               "Plot: benchmarks/results/nas_pareto.png.", "1 torch thread."],
        extra={"winner_sample": next(r["sample"] for r in front
                                     if f"NAS #{r['number']}" == winner[0])})


def plot(points: list[tuple], limit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for kind, marker, color in (("nas", "o", "tab:blue"), ("zoo", "s", "tab:red")):
        pts = sorted((p for p in points if p[3] == kind), key=lambda p: p[1])
        ax.plot([p[1] for p in pts], [100 * p[2] for p in pts], marker=marker, color=color,
                linestyle="-" if kind == "nas" else "none",
                label="NAS (retrained)" if kind == "nas" else "hand-designed (zoo)")
        for p in pts:
            ax.annotate(p[0], (p[1], 100 * p[2]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    ax.axvline(limit, color="gray", linestyle=":", label="1/10 of LeNet-300-100")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no overlapping labels
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST: accuracy against weights (same training budget)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "nas_pareto.png", dpi=120)


if __name__ == "__main__":
    main()
