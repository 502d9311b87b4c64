"""modelzip compress --stream: a Hugging Face folder of safetensors compressed block by
block into a .mzip without loading it whole (``mz.compress_pretrained``); no evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DataError
from ..io.shards import ShardedWeights
from ..pipeline.recipe import Recipe
from ..pipeline.stream import compress_pretrained
from ..progress import note
from .common import emit


def add_args(p: Any) -> None:
    p.add_argument("--stream", action="store_true",
                   help="--model is a Hugging Face folder of safetensors: compress it one "
                        "block at a time (one-stage calibrated recipe; no evaluation)")
    p.add_argument("--calib", default=None,
                   help="with --stream: calibration tokens, a .safetensors file holding "
                        "'input_ids' (sequences x tokens) or a text file tokenized with the "
                        "folder's tokenizer")
    p.add_argument("--calib-seqs", type=int, default=32, help="with --stream and a text file")
    p.add_argument("--seq-len", type=int, default=512, help="with --stream and a text file")
    p.add_argument("--batch", type=int, default=4, help="with --stream: sequences per batch")
    p.add_argument("--checkpoint-dir", default=None,
                   help="per-block checkpoints: a killed --stream run resumes there")


def run(args: Any) -> int:
    folder = Path(args.model)
    if not folder.is_dir():
        raise ConfigError(f"--stream needs --model to be a Hugging Face folder, not {folder}")
    if args.calib is None:
        raise ConfigError("--stream needs --calib (token ids or a text file)")
    if min(args.calib_seqs, args.seq_len, args.batch) < 1:
        raise ConfigError("--calib-seqs, --seq-len and --batch must be >= 1")
    recipe = Recipe.load(args.recipe)
    ShardedWeights(folder)  # a bad checkpoint is one line before any status line
    ids = _token_ids(Path(args.calib), folder, args)
    batches = [{"input_ids": ids[i:i + args.batch]} for i in range(0, len(ids), args.batch)]
    note(f"compressing {folder} block by block with '{recipe.name}' on {ids.shape[0]} x "
         f"{ids.shape[1]} calibration tokens", progress=not args.no_progress)
    size = compress_pretrained(folder, args.out, recipe, batches, device=args.device,
                               checkpoint_dir=args.checkpoint_dir,
                               info={"recipe": recipe.name})
    emit(args, {"file": args.out, "file_bytes": size, "recipe": recipe.name,
                "calib_tokens": int(ids.numel())})
    return 0


def _token_ids(path: Path, folder: Path, args: Any) -> torch.Tensor:
    if not path.is_file():
        raise ConfigError(f"--calib {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                ids = f.get_tensor("input_ids")
        except Exception as e:  # SafetensorError, a missing key, OSError
            raise DataError(f"--calib {path}: no readable 'input_ids' tensor ({e})") from None
        if ids.dim() != 2 or ids.dtype.is_floating_point or not ids.numel():
            raise DataError(f"--calib {path}: 'input_ids' must be a 2-D integer tensor")
        return ids.long()
    from ..io import hf

    try:
        tok = hf.tokenizer(folder)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--calib {path} is text but {folder} has no tokenizer ({e}); give "
                          "token ids as .safetensors") from None
    flat = tok(path.read_text(encoding="utf-8", errors="replace"),
               return_tensors="pt")["input_ids"][0]
    n = min(args.calib_seqs, flat.numel() // args.seq_len)
    if n < 1:
        raise DataError(f"--calib {path} holds fewer than {args.seq_len} tokens")
    return flat[: n * args.seq_len].view(n, args.seq_len)
