"""Acceptance 1: a tenth-size MLP student distilled from LeNet-5 on Fashion-MNIST beats the
same student trained from scratch (same initialisation, data order, epochs and seeds).

Teacher: the cached LeNet-5 (431K weights). Student: MLP 784-50-10 (39.7K weights).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from common import fashion, fmt, trained_lenet5, write_result

import modelzip as mz
from modelzip.zoo.models import count_weights


def run_pair(teacher, cfg: mz.Distillation, seed: int, epochs: int, lr: float,
             hidden: int) -> tuple[float, float]:
    """(scratch accuracy, distilled accuracy) of one seed: same init, same data order."""
    torch.manual_seed(seed)
    init = mz.zoo.mlp128(hidden=hidden)
    scratch, student = copy.deepcopy(init), copy.deepcopy(init)
    mz.train(scratch, fashion(seed=seed).train, epochs=epochs, lr=lr, progress=False)
    mz.distill(student, teacher, fashion(seed=seed).train, cfg, epochs=epochs, lr=lr,
               progress=False)
    test = fashion().test
    return mz.accuracy(scratch, test), mz.accuracy(student, test)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    teacher = trained_lenet5()
    t_acc = mz.accuracy(teacher, fashion().test)
    cfg = mz.Distillation(temperature=args.temperature, alpha=args.alpha)
    student_w = count_weights(mz.zoo.mlp128(hidden=args.hidden))
    rows, pairs = [], []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        a, b = run_pair(teacher, cfg, seed, args.epochs, args.lr, args.hidden)
        pairs.append((a, b))
        print(f"seed {seed}: scratch {a:.4f} distilled {b:.4f} ({time.perf_counter() - t0:.0f} s)")
        rows.append([seed, fmt(100 * a, 2), fmt(100 * b, 2), fmt(100 * (b - a), 2)])
    mean = [statistics.mean(x) for x in zip(*pairs)]
    gain = [100 * (b - a) for a, b in pairs]
    spread = statistics.stdev(gain) if len(gain) > 1 else 0.0
    rows.append(["mean", fmt(100 * mean[0], 2), fmt(100 * mean[1], 2),
                 f"{statistics.mean(gain):.2f} ± {spread:.2f}"])
    summary = [["LeNet-5 teacher", count_weights(teacher), fmt(100 * t_acc, 2)],
               [f"MLP 784-{args.hidden}-10 from scratch", student_w, fmt(100 * mean[0], 2)],
               [f"MLP 784-{args.hidden}-10 distilled", student_w, fmt(100 * mean[1], 2)]]
    met = statistics.mean(gain) >= 0.5
    print(f"teacher {t_acc:.4f}; mean gain {statistics.mean(gain):.2f} points; target met: {met}")
    if args.no_write:
        return
    write_result(
        "distill_fashion", "Distillation on Fashion-MNIST: LeNet-5 teacher, tenth-size MLP student",
        [{"title": "Test accuracy (%), mean over seeds",
          "columns": ["model", "weights", "accuracy %"], "rows": summary},
         {"title": f"Per seed ({args.epochs} epochs, lr {args.lr}, T={args.temperature}, "
                   f"alpha={args.alpha}; same init and data order both ways)",
          "columns": ["seed", "scratch %", "distilled %", "gain (points)"], "rows": rows}],
        anchors=["Hinton, Vinyals & Dean 2015 (MNIST): 146 test errors trained from scratch, "
                 "74 distilled from a large net (T=20).",
                 "Target: the distilled student beats the same student from scratch by "
                 ">= 0.5 points, same epochs and seeds."],
        notes=[f"Mean gain {statistics.mean(gain):.2f} ± {spread:.2f} points (std over "
               f"{args.seeds} seeds): target {'met' if met else 'NOT met'}.",
               "T and alpha were picked in a 1-seed pilot with the cached LeNet-300-100 "
               "teacher (gain over scratch at 3 epochs: T=1/alpha=0.9 +0.26, T=2/0.5 -0.28, "
               "T=4/0.5 -0.71, T=4/0.9 -0.79, T=8/0.9 -1.74 points; at 10 epochs T=1 +0.26, "
               "T=2 -0.49): this tiny student gains only from low temperatures.",
               f"Student has {student_w} weights = {student_w / count_weights(teacher):.3f} "
               "of the teacher's."],
        extra={"config": cfg.to_dict(), "epochs": args.epochs, "lr": args.lr})


if __name__ == "__main__":
    main()
