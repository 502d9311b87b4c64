"""modelzip compare: the trust table of any two models (A = reference, B = candidate)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from ..errors import ConfigError
from ..io.mzip import load
from ..trust.api import trust
from ..trust.constraints import add_constraint_args, check_constraints, constraints_from_args
from .common import DATASETS, add_json, emit, load_dataset


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None


def add_trust_args(p: Any) -> None:
    """Options of the trust computation shared by compare and report."""
    p.add_argument("--no-robustness", action="store_true",
                   help="skip the noise / FGSM / PGD accuracies")
    p.add_argument("--eps", default="0.01,0.03",
                   help="attack radii, comma-separated, in model-input units (built-in image "
                        "data is normalised: one pixel step of 1/255 is about 0.011)")
    p.add_argument("--sigmas", default="0.1,0.3", help="Gaussian noise stds (input units)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps (0: FGSM only)")
    p.add_argument("--robust-samples", type=int, default=1000,
                   help="examples attacked per model")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")


def trust_kwargs(args: Any) -> dict[str, Any]:
    """Keyword arguments of ``trust()`` from the options of :func:`add_trust_args`."""
    if args.pgd_steps < 0 or args.robust_samples < 1:
        raise ConfigError("--pgd-steps must be >= 0 and --robust-samples >= 1")
    return {"robustness": not args.no_robustness, "eps": _floats(args.eps),
            "noise_sigmas": _floats(args.sigmas), "pgd_steps": args.pgd_steps,
            "robust_samples": args.robust_samples, "device": args.device}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("compare", help="trust table of two models: per-class drops, "
                                       "agreement, calibration, robustness")
    p.add_argument("a", help="reference model (.mzip), e.g. the original")
    p.add_argument("b", help="candidate model (.mzip), e.g. the compressed one")
    p.add_argument("--data", required=True, help=f"dataset: {', '.join(DATASETS)} or a text "
                                                  "file")
    p.add_argument("--data-root", default=None)
    p.add_argument("--max-batches", type=int, default=None, help="evaluate on fewer batches")
    p.add_argument("--html", default=None, help="also write an HTML report here")
    add_trust_args(p)
    add_constraint_args(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    constraints = constraints_from_args(args)
    a, b = load(args.a), load(args.b)
    split = load_dataset(args.data, args.data_root)
    rep = trust(a, b, split.test, max_batches=args.max_batches, **trust_kwargs(args))
    failed = check_constraints(rep, constraints) if constraints else []
    if args.html:
        from ..report import report

        report(b, a, trust=rep, title=f"modelzip compare: {args.a} vs {args.b}"
               ).to_html(args.html)
    if args.json:
        emit(args, {"a": args.a, "b": args.b, "data": args.data, "trust": rep,
                    "constraints": constraints, "failed": failed})
    else:
        from ..report.trust_section import tables

        console = Console(width=max(Console().width, 110))
        for t in tables(rep):
            console.print(t)
        if constraints:
            print("constraints: " + ("all met" if not failed else "FAILED " + "; ".join(failed)))
        if args.html:
            print(f"wrote {args.html}")
    return 1 if failed else 0
