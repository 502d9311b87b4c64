"""Acceptance 2: a half-depth tiny_gpt distilled from the cached 4-layer teacher against the
same student trained from scratch on Tiny Shakespeare (same init, data order and steps).
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from common import fmt, shakespeare, trained_tiny_gpt, write_result

import modelzip as mz


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-init", action="store_true",
                    help="also distil a student initialised from every other teacher block")
    args = ap.parse_args()
    torch.set_num_threads(1)
    teacher = trained_tiny_gpt()
    data = lambda: shakespeare(128, 32, stride=16, seed=args.seed)  # noqa: E731
    val = data().test
    epochs = args.steps / len(data().train)
    cfg = mz.Distillation(temperature=args.temperature, alpha=args.alpha)
    torch.manual_seed(args.seed)
    init = mz.zoo.student(teacher, depth=0.5)
    runs = {"from scratch": lambda m: mz.train(m, data().train, epochs=epochs, lr=args.lr,
                                               progress=False),
            "distilled": lambda m: mz.distill(m, teacher, data().train, cfg, epochs=epochs,
                                              lr=args.lr, progress=False)}
    rows = [["teacher (4 layers)", mz.count_params(teacher)[0], "-",
             fmt(mz.perplexity(teacher, val), 3)]]
    ppl = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        model = run(copy.deepcopy(init))
        ppl[name] = mz.perplexity(model, val)
        print(f"{name}: ppl {ppl[name]:.3f} ({time.perf_counter() - t0:.0f} s)")
        rows.append([f"student (2 layers) {name}", mz.count_params(model)[0], args.steps,
                     fmt(ppl[name], 3)])
    if args.teacher_init:
        model = mz.zoo.student(teacher, depth=0.5, init="teacher")
        runs["distilled"](model)
        ppl["teacher-init"] = mz.perplexity(model, val)
        rows.append(["student (2 layers) distilled, init from teacher blocks 0 and 2",
                     mz.count_params(model)[0], args.steps, fmt(ppl["teacher-init"], 3)])
    better = ppl["distilled"] < ppl["from scratch"]
    gap = math.log(ppl["from scratch"]) - math.log(ppl["distilled"])
    write_result(
        "distill_gpt", "Distillation of tiny_gpt on Tiny Shakespeare: half-depth student",
        [{"title": f"Validation perplexity (characters; {args.steps} steps of 32x128, "
                   f"lr {args.lr}, T={args.temperature}, alpha={args.alpha})",
          "columns": ["model", "params", "steps", "val perplexity"], "rows": rows}],
        anchors=["Target: the distilled half-depth student has a lower validation perplexity "
                 "than the same student trained from scratch with the same steps."],
        notes=[f"Distilled {ppl['distilled']:.3f} vs from scratch {ppl['from scratch']:.3f} "
               f"({100 * (1 - ppl['distilled'] / ppl['from scratch']):.1f}% lower): target "
               f"{'met' if better else 'NOT met'}.",
               f"Cross-entropy gap: {gap:.4f} nats/char. Same initialisation and data order "
               "both ways; one seed."],
        extra={"config": cfg.to_dict(), "steps": args.steps, "lr": args.lr})


if __name__ == "__main__":
    main()
