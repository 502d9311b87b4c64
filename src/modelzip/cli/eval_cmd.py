"""modelzip eval: evaluate a .mzip (in torch) or an .onnx file (in ONNX Runtime)."""

from __future__ import annotations

from typing import Any

from ..io.mzip import load
from ..measure import count_params
from .common import DATASETS, add_json, emit
from .workflow import add_trust_code, file_metric


def add_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a .mzip or .onnx model on a dataset")
    p.add_argument("file", help="a .mzip file, or an .onnx file (run in ONNX Runtime)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    p.add_argument("--data", default="digits",
                   help=f"dataset: {', '.join(DATASETS)}, a text file, or 'sentences' "
                        "(embedding fidelity of an encoder to --baseline)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--baseline", default=None,
                   help="the original model's .mzip (needed with --data sentences)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer folder for --data sentences (default: all-MiniLM-L6-v2's)")
    add_trust_code(p)
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    if str(args.file).endswith(".onnx"):
        return run_onnx(args)
    model = load(args.file, trust_code=args.trust_code)
    baseline = load(args.baseline, trust_code=args.trust_code) if args.baseline else None
    name, metric, _ = file_metric(args, baseline)
    params, nonzeros = count_params(model)
    out: dict[str, Any] = {"file": args.file, "data": args.data, "params": params,
                           "nonzeros": nonzeros, name: metric(model)}
    emit(args, out)
    return 0


def run_onnx(args: Any) -> int:
    """Accuracy or perplexity and per-batch latency of an ONNX file in ONNX Runtime."""
    from pathlib import Path

    from ..data import info
    from ..export.onnx_runtime import OrtModule, latency
    from ..train import accuracy, perplexity
    from .common import load_dataset

    model = OrtModule(args.file, args.threads)
    split = load_dataset(args.data, args.data_root)
    out: dict[str, Any] = {"file": args.file, "runtime": "onnxruntime", "data": args.data,
                           "bytes": Path(args.file).stat().st_size}
    if "vocab_size" in info(split):
        out["perplexity"] = perplexity(model, split.test)
    else:
        out["accuracy"] = accuracy(model, split.test)
    x = next(iter(split.test))[0]
    out["batch_latency_s"] = latency(model, x)
    out["batch_size"] = int(x.shape[0])
    emit(args, out)
    return 0
