"""modelzip export: a .mzip as an ONNX file (verified with onnxruntime) or, for Hugging
Face models, as a transformers folder (``hf``: dense, ``compressed-tensors``: integer codes
as vLLM reads them), verified by loading it with transformers in a fresh process."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ModelzipError
from ..export import export_onnx
from ..io.mzip import load
from .common import add_json, emit, load_dataset
from .workflow import add_trust_code


def add_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a .mzip to ONNX or a Hugging Face folder")
    p.add_argument("file", help="a .mzip file")
    p.add_argument("--format", default="onnx", choices=("onnx",) + HF_FORMATS,
                   help="onnx (default), hf (dense folder) or compressed-tensors (folder)")
    p.add_argument("--out", required=True, help="output .onnx path, or folder for hf formats")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--data", default=None, help="dataset giving the example input shape")
    p.add_argument("--data-root", default=None)
    p.add_argument("--opset", type=int, default=17)
    add_trust_code(p)
    p.add_argument("--accuracy-level", type=int, default=None, choices=[0, 1, 2, 3, 4],
                   help="MatMulNBits accuracy level (default: 4, falling back to 0)")
    p.add_argument("--fp16", action="store_true", help="store dense float weights as fp16")
    p.add_argument("--int8-activations", default=None, choices=["token", "tensor", "auto"],
                   help="Int8 dynamic activation scales: per token (exact), per tensor "
                        "(faster), or auto: per tensor where it adds no error on --data "
                        "calibration batches (default: auto with --data, else token)")
    p.add_argument("--decode", action="store_true",
                   help="a Hugging Face causal LM's decode step: past key/values in and out")
    add_json(p)
    p.set_defaults(func=run)


def example_for(arch: Any) -> Any:
    """An example input from a zoo or Hugging Face (token ids) architecture record."""
    if isinstance(arch, dict) and arch.get("kind") == "hf":
        vocab = (arch.get("config") or {}).get("vocab_size")
        if not isinstance(vocab, int) or vocab < 1:
            raise ModelzipError("the file's Hugging Face config has no vocab_size: give --data")
        ids = torch.randint(0, vocab, (1, 8), generator=torch.Generator().manual_seed(0))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if not isinstance(arch, dict) or arch.get("kind") != "zoo":
        raise ModelzipError("give --data to export a model that is not from the zoo")
    kw, name = arch.get("kwargs", {}), arch.get("name")
    if name == "lenet5":
        s = kw.get("image_size", 28)
        return torch.randn(1, kw.get("in_channels", 1), s, s)
    if name == "tiny_gpt":
        return torch.randint(0, kw.get("vocab_size", 65), (1, kw.get("seq_len", 128)))
    return torch.randn(1, kw.get("in_features", 784))


HF_FORMATS = ("hf", "compressed-tensors")


def run_hf(args: Any) -> int:
    """Export a .mzip of a Hugging Face model as a verified transformers folder."""
    from ..export.hf_save import save_pretrained
    from ..io import hf  # noqa: F401  (registers the "hf" architecture kind)

    model = load(args.file)
    arch = getattr(model, "_mz_arch", None)
    if not (isinstance(arch, dict) and arch.get("kind") == "hf"):
        raise ModelzipError(f"{args.file} does not hold a Hugging Face model: "
                            "--format hf|compressed-tensors needs one (use --format onnx)")
    fmt = "dense" if args.format == "hf" else "compressed-tensors"
    summary = save_pretrained(model, args.out, fmt, overwrite=args.force)
    emit(args, {"file": args.file, **summary})
    return 0


def run(args: Any) -> int:
    if args.format in HF_FORMATS:
        return run_hf(args)
    model = load(args.file, trust_code=args.trust_code)
    calib = None
    if args.data:
        split = load_dataset(args.data, args.data_root)
        example = next(iter(split.test))[0][:1]
        calib = [b[0] for b, _ in zip(split.train, range(4), strict=False)]
    else:
        example = example_for(getattr(model, "_mz_arch", None))
    summary = export_onnx(model, args.out, example, opset=args.opset,
                          accuracy_level=args.accuracy_level, fp16=args.fp16,
                          int8_activations=args.int8_activations, calib_inputs=calib,
                          decode=args.decode)
    if args.json:
        emit(args, {"file": args.file, "onnx": str(summary.path),
                    "bytes": summary.file_bytes, **summary.to_dict()})
    else:
        print(summary)
    return 0
