"""Verification of a written Hugging Face folder: transformers loads it in a fresh
process, its load report must name no missing, unexpected or mismatched tensor (any is
an error, never a warning), and its outputs must match modelzip's on the same inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelzipError

MARK = "MZ_VERIFY_JSON:"

# run in a fresh interpreter: nothing of the exporting process (patched classes, caches,
# the model object) can make a broken folder look right
_CHILD = r"""
import json, sys
from pathlib import Path
import torch, transformers
from safetensors.torch import load_file, save_file
folder, inp, outp = sys.argv[1:4]
name = json.loads((Path(folder) / "config.json").read_text())["architectures"][0]
cls = getattr(transformers, name, None)
if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
    raise SystemExit(f"config.json names {name!r}, not a transformers model class")
model, info = cls.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                  output_loading_info=True)
model.eval()
with torch.no_grad():
    out = model(**load_file(inp))
t = out.logits if getattr(out, "logits", None) is not None else (
    out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out[0])
save_file({"out": t.float().contiguous()}, outp)
report = {k: sorted(str(x) for x in info.get(k, []) or [])
          for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
report["class"] = name
print("MZ_VERIFY_JSON:" + json.dumps(report))
"""


class ExportVerifyError(ModelzipError):
    """A written folder does not load cleanly in transformers or gives other outputs."""


def example_inputs(model: nn.Module, batch: int = 2, seq_len: int = 16,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids (and an attention mask) that every text model in transformers accepts."""
    cfg = model.config
    vocab = int(getattr(cfg, "vocab_size", 100) or 100)
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 64)
    seq = max(2, min(seq_len, int(limit)))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def model_output(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The logits (or last hidden state) of ``model`` on ``inputs``, as float32."""
    was = model.training
    model.eval()
    try:
        out = model(**inputs)
    finally:
        model.train(was)
    for name in ("logits", "last_hidden_state"):
        t = getattr(out, name, None)
        if t is not None:
            return t.float()
    return out[0].float()


def load_in_transformers(folder: Path, inputs: dict[str, torch.Tensor],
                         timeout: float = 900.0) -> tuple[dict[str, Any], torch.Tensor]:
    """Load ``folder`` with transformers in a subprocess; (load report, output)."""
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory(prefix="mz-verify-") as tmp:
        inp, outp = Path(tmp) / "in.safetensors", Path(tmp) / "out.safetensors"
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(inp))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   TRANSFORMERS_VERBOSITY="error")
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(inp),
                                   str(outp)], capture_output=True, text=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ExportVerifyError(f"loading {folder} in transformers timed out") from None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportVerifyError(f"transformers could not load {folder}: {tail}")
        return json.loads(lines[-1][len(MARK):]), load_file(str(outp))["out"]


def check_report(report: dict[str, Any]) -> None:
    """Any missing, unexpected or mismatched tensor in transformers' load report is an
    error: transformers would have left those weights at random initialisation."""
    bad = {k: report.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                      "error_msgs") if report.get(k)}
    if bad:
        parts = "; ".join(f"{k.replace('_', ' ')}: {v[:4]}" for k, v in bad.items())
        raise ExportVerifyError(f"transformers' load report is not clean ({parts}): the "
                                "folder would load with randomly initialised weights")


def compare(ref: torch.Tensor, got: torch.Tensor, tol: float) -> dict[str, float]:
    """Max abs difference and cosine of two outputs; an error above ``tol`` or on NaN."""
    if ref.shape != got.shape:
        raise ExportVerifyError(f"output shape {tuple(got.shape)} != {tuple(ref.shape)}")
    if not torch.isfinite(got).all():
        raise ExportVerifyError("transformers' outputs contain NaN or inf")
    diff = float((ref - got).abs().max())
    cos = float(torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0))
    if diff > tol:
        raise ExportVerifyError(
            f"transformers' outputs differ from modelzip's by {diff:.3g} (allowed {tol:.3g})")
    return {"max_abs_diff": diff, "cosine": cos, "tolerance": tol}


def verify_folder(folder: Path, ref: torch.Tensor, inputs: dict[str, torch.Tensor],
                  tol: float) -> dict[str, Any]:
    """Load ``folder`` in a fresh transformers process and check it (see module doc)."""
    report, got = load_in_transformers(folder, inputs)
    check_report(report)
    return {"loaded_as": report.get("class"), **compare(ref, got, tol)}
