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
import json, sys, traceback
from pathlib import Path
import torch, transformers
from safetensors.torch import load_file, save_file
for i, job in enumerate(json.loads(Path(sys.argv[1]).read_text())):
    folder = job["folder"]
    try:
        name = json.loads((Path(folder) / "config.json").read_text())["architectures"][0]
        cls = getattr(transformers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise ValueError(f"config.json names {name!r}, not a transformers model class")
        kw = {"dtype": getattr(torch, job["dtype"])} if job.get("dtype") else {}
        model, info = cls.from_pretrained(folder, local_files_only=True, **kw,
                                          trust_remote_code=False, output_loading_info=True)
        report = {k: sorted(str(x) for x in info.get(k, []) or []) for k in
                  ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
        report["class"] = name
        report["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
        print("MZ_VERIFY_JSON:" + json.dumps({"job": i, "report": report}), flush=True)
        with torch.no_grad():
            out = model.eval()(**load_file(job["inp"]))
        t = out.logits if getattr(out, "logits", None) is not None else (
            out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None
            else out[0])
        save_file({"out": t.float().contiguous()}, job["out"])
        print("MZ_VERIFY_JSON:" + json.dumps({"job": i, "done": True}), flush=True)
    except Exception as exc:
        line = f"{type(exc).__name__}: {exc}".splitlines()[0]
        print("MZ_VERIFY_JSON:" + json.dumps({"job": i, "error": line}), flush=True)
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


def load_in_transformers(jobs: list[tuple[Path, dict[str, torch.Tensor]]],
                         timeout: float = 1800.0, dtype: str | None = None
                         ) -> list[dict[str, Any]]:
    """Load each folder with transformers in one fresh subprocess (in ``dtype``, e.g.
    "float32"; None: the config's) and run it on its inputs; per folder:
    {"report": load report, "out": output} or {"error": line}."""
    from safetensors.torch import load_file, save_file

    with tempfile.TemporaryDirectory(prefix="mz-verify-") as tmp:
        spec = []
        for i, (folder, inputs) in enumerate(jobs):
            inp, outp = Path(tmp) / f"in{i}.safetensors", Path(tmp) / f"out{i}.safetensors"
            save_file({k: v.contiguous() for k, v in inputs.items()}, str(inp))
            spec.append({"folder": str(folder), "inp": str(inp), "out": str(outp),
                         "dtype": dtype})
        (Path(tmp) / "jobs.json").write_text(json.dumps(spec))
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD, str(Path(tmp) / "jobs.json")],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ExportVerifyError("loading the folder(s) in transformers timed out") from None
        results: list[dict[str, Any]] = [{} for _ in jobs]
        for ln in proc.stdout.splitlines():
            if ln.startswith(MARK):
                msg = json.loads(ln[len(MARK):])
                results[msg.pop("job")].update(msg)
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        for i, r in enumerate(results):
            if r.get("done"):
                r["out"] = load_file(spec[i]["out"])["out"]
            elif "error" not in r:
                r["error"] = tail
        return results


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
    cos = float(torch.nn.functional.cosine_similarity(ref.flatten().double(),
                                                      got.flatten().double(), dim=0))
    if diff > tol:
        raise ExportVerifyError(
            f"transformers' outputs differ from modelzip's by {diff:.3g} (allowed {tol:.3g})")
    return {"max_abs_diff": diff, "cosine": cos, "tolerance": tol}


def check_result(folder: Path, result: dict[str, Any], ref: torch.Tensor,
                 tol: float) -> dict[str, Any]:
    """The verdict on one loaded folder: a clean load report first, then the outputs."""
    if "report" in result:
        check_report(result["report"])
    if "error" in result:
        raise ExportVerifyError(f"transformers could not load or run {folder}: "
                                f"{result['error']}")
    return {"loaded_as": result["report"].get("class"), "dtype": result["report"].get("dtype"),
            **compare(ref, result["out"], tol)}


def verify_folder(folder: Path, ref: torch.Tensor, inputs: dict[str, torch.Tensor],
                  tol: float, dtype: str | None = None) -> dict[str, Any]:
    """Load ``folder`` in a fresh transformers process and check it (see module doc)."""
    return check_result(folder, load_in_transformers([(folder, inputs)], dtype=dtype)[0],
                        ref, tol)
