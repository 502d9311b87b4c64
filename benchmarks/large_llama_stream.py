"""Issue 16 item 3: compress a sharded bf16 Llama checkpoint block by block
(``mz.compress_pretrained``) against the in-memory path (``load_pretrained`` +
``mz.quantize`` + ``mz.save``): wall time, peak RSS, file bytes, file identity, and a
streamed run SIGKILLed after a block and resumed.

A random-init bf16 Llama (``--shape moderate``: hidden 1024, 8 layers, vocab 32000;
``--shape tinyllama``: TinyLlama-1.1B's shape) is written with ``save_pretrained``
into shards of at most 100 MB. GPTQ 4-bit g128 of the blocks' Linear layers
(embeddings and LM head kept in bf16), 16 x 256 calibration tokens, 2 torch threads.
Every run is a fresh subprocess, so its peak RSS (VmHWM) is its own; the RSS after the
imports (torch, transformers with the Llama model code, modelzip) is recorded and the
figures above it are compared with the budget of the issue: one block's bf16 weights +
the weights outside the blocks + the calibration activations (two copies: the engine
holds a block's inputs and outputs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import CACHE, REPO, fmt, write_result

WORK = CACHE / "large_llama_stream"
SHAPES = {
    "moderate": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
                 "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000},
    "tinyllama": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                  "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000},
}
N_SEQ, SEQ_LEN, BATCH = 16, 256, 4
KILL_AFTER = 2  # SIGKILL the streamed run once block 2 (0-based) is checkpointed


def _status(field: str, pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _calib():
    import torch

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 32000, (N_SEQ, SEQ_LEN), generator=g)
    return [{"input_ids": ids[i:i + BATCH]} for i in range(0, N_SEQ, BATCH)]


class _Trace(logging.Handler):
    """RSS (MiB) each time modelzip logs a step (a finished block, the outside weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.rss: list[list] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.rss.append([record.getMessage()[:24], round(_status("VmRSS"), 1)])


def _write_checkpoint(shape: str, folder: Path) -> dict:
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(max_position_embeddings=2048, **SHAPES[shape])
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model.save_pretrained(folder, max_shard_size="100MB")
    blocks = model.model.layers
    block = sum(p.numel() * p.element_size() for p in blocks[0].parameters())
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"weight_bytes": total, "block_bytes": block,
            "outside_bytes": total - block * len(blocks),
            "act_bytes": 2 * N_SEQ * SEQ_LEN * cfg.hidden_size * 2,
            "shards": len(list(folder.glob("*.safetensors")))}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(2)
    if args.mode == "write":
        Path(args.out).write_text(json.dumps(_write_checkpoint(args.shape, Path(args.src))))
        return
    from transformers import LlamaForCausalLM  # noqa: F401  the model's code (125 MiB)

    import modelzip as mz
    from modelzip.io.hf import load_pretrained

    base = _status("VmRSS")  # both paths need this code: counted in the baseline
    trace = _Trace()
    logging.getLogger("modelzip").addHandler(trace)
    logging.getLogger("modelzip").setLevel(logging.INFO)
    cfg = mz.WeightOnly(bits=4, group_size=128, method="gptq", targets=["Linear"],
                        ignore=["re:lm_head"])  # the blocks' Linear layers
    t0 = time.perf_counter()
    if args.mode == "memory":
        model = load_pretrained(args.src, "AutoModelForCausalLM")
        mz.quantize(model, cfg, calib_data=_calib())
        size = mz.save(model, args.save)
    else:
        size = mz.compress_pretrained(args.src, args.save, cfg, _calib(),
                                      checkpoint_dir=args.ckpt)
    out = {"mode": args.mode, "wall_s": time.perf_counter() - t0, "file_bytes": size,
           "rss_base_mb": base, "rss_peak_mb": _status("VmHWM"), "block_rss_mb": trace.rss,
           "sha256": _digest(Path(args.save))}
    Path(args.out).write_text(json.dumps(out))


def _launch(name: str, mode: str, shape: str, ckpt: Path | None = None,
            kill_after: int | None = None) -> dict:
    out = WORK / f"{shape}_{name}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", mode, "--shape", shape, "--out", str(out),
           "--src", str(WORK / f"{shape}_hf"), "--save", str(WORK / f"{shape}_{name}.mzip")]
    if ckpt:
        cmd += ["--ckpt", str(ckpt)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    if kill_after is not None:
        progress = ckpt / "progress.json"
        while proc.poll() is None:
            if progress.exists() and json.loads(progress.read_text())["done"] > kill_after:
                hwm = _status("VmHWM", str(proc.pid))
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"killed_after_s": time.perf_counter() - t0, "rss_peak_mb": hwm,
                        "done_blocks": json.loads(progress.read_text())["done"]}
            time.sleep(0.2)
        return {"error": f"ended (rc {proc.returncode}) before block {kill_after}"}
    proc.wait()
    if proc.returncode:
        return {"error": f"rc {proc.returncode}"}
    return json.loads(out.read_text())


def run(shape: str) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    src = WORK / f"{shape}_hf"
    shutil.rmtree(src, ignore_errors=True)
    ckpt = WORK / f"{shape}_ckpt"
    shutil.rmtree(ckpt, ignore_errors=True)
    sizes = _launch("write", "write", shape)
    runs = {"stream": _launch("stream", "stream", shape),
            "memory": _launch("memory", "memory", shape),
            "killed": _launch("resumed", "stream", shape, ckpt, KILL_AFTER),
            "resumed": _launch("resumed", "stream", shape, ckpt)}
    report(shape, sizes, runs)


def report(shape: str, sizes: dict, runs: dict) -> None:
    mib = 2 ** 20
    budget = (sizes["block_bytes"] + sizes["outside_bytes"] + sizes["act_bytes"]) / mib
    whole = sizes["weight_bytes"] / mib
    rows = []
    for name, r in runs.items():
        above = r.get("rss_peak_mb", float("nan")) - r.get("rss_base_mb", float("nan"))
        rows.append([name, fmt(r.get("wall_s", r.get("killed_after_s")), 1),
                     fmt(r.get("rss_base_mb"), 0), fmt(r.get("rss_peak_mb"), 0),
                     fmt(above, 0), r.get("file_bytes", "-"),
                     (r.get("sha256") or r.get("error") or "-")[:16]])
    s, m, res = runs["stream"], runs["memory"], runs["resumed"]
    ok = s.get("sha256") and s.get("sha256") == m.get("sha256")
    notes = [
        f"{shape}: bf16 weights {whole:.0f} MiB in {sizes['shards']} shards; one block "
        f"{sizes['block_bytes'] / mib:.1f} MiB, outside the blocks "
        f"{sizes['outside_bytes'] / mib:.1f} MiB, calibration activations (2 copies) "
        f"{sizes['act_bytes'] / mib:.1f} MiB: budget {budget:.0f} MiB above the imports.",
        f"streamed file {'byte-identical to' if ok else 'DIFFERS from'} the in-memory "
        f"path's ({s.get('file_bytes')} bytes, sha256 {str(s.get('sha256'))[:16]}).",
        f"streamed peak RSS {s['rss_peak_mb'] - s['rss_base_mb']:.0f} MiB above the imports "
        f"({s['rss_peak_mb']:.0f} MiB in all) against the {budget:.0f} MiB budget "
        f"({'met' if s['rss_peak_mb'] - s['rss_base_mb'] <= budget else 'NOT met'}); the "
        f"in-memory path {m['rss_peak_mb'] - m['rss_base_mb']:.0f} MiB above the imports; "
        f"the whole model's bf16 weights are {whole:.0f} MiB.",
        "RSS (MiB) at each logged step of the streamed run: "
        + ", ".join(f"{m.split(':')[0]} {v:.0f}" for m, v in s.get("block_rss_mb", [])) + ".",
        f"killed (SIGKILL) after {runs['killed'].get('done_blocks')} checkpointed blocks, "
        "then resumed: file " + ("bit-identical" if res.get("sha256") == s.get("sha256")
                                 else "DIFFERS") + " to the uninterrupted streamed run's.",
        "Wall times are single runs on a 2-core machine shared with other jobs.",
    ]
    write_result(
        f"large_llama_stream_{shape}" if shape != "moderate" else "large_llama_stream",
        f"Streamed GPTQ 4-bit g128 of a sharded bf16 Llama ({shape}) vs in memory",
        [{"title": "each row is one subprocess at 2 torch threads; RSS in MiB (VmRSS after "
                   "the imports, VmHWM)",
          "columns": ["run", "wall s", "RSS imports", "RSS peak", "peak above imports",
                      "file bytes", "sha256 / error"], "rows": rows}],
        anchors=["Issue 16: peak RSS at most the model's weights in their own dtype + one "
                 "block + calibration activations; sharded safetensors compressed without "
                 "loading them whole; a killed run resumes to a bit-identical file."],
        notes=notes, extra={"sizes": sizes, "runs": runs, "budget_mb": budget},
        script="large_llama_stream")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["write", "memory", "stream"])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="moderate")
    ap.add_argument("--src")
    ap.add_argument("--save")
    ap.add_argument("--ckpt")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        args.mode = args.child
        return child(args)
    run(args.shape)


if __name__ == "__main__":
    main()
