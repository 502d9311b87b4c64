"""Issue 16 benchmark 3: RSS and latency of loaded 4-bit weight-only models, packed (the
default) vs an fp32 cache (``mz.unpack``) vs the fp32 model, for all-MiniLM-L6-v2 and
tiny_gpt. RSS is measured in a fresh process per variant: after the imports (including
the architecture's modules, built once on the meta device), and after
``mz.load`` + one forward (current RSS and ru_maxrss). Latency: medians, interleaved in
one process, at 1 and 2 threads."""

from __future__ import annotations

import ctypes
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
from common import CACHE, fmt, write_result

import modelzip as mz
from modelzip.io import hf

PAGE = 4096
# 22M parameters: at the default 1.9M, process noise (allocator, kernels' first use)
# swamps the weights' few MiB
GPT = {"vocab_size": 65, "seq_len": 128, "d_model": 512, "n_layer": 7, "n_head": 8}
VARIANTS = ("fp32", "packed", "fp32 cache")


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 2**20


def peak_mib() -> float:
    """VmHWM: this process image's peak RSS (ru_maxrss would carry the parent's peak
    across fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trim() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it after the load's
    temporaries are freed, which would hide what the model itself holds)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def inputs(name: str) -> dict:
    g = torch.Generator().manual_seed(0)
    if name == "minilm":
        ids = torch.randint(1000, 20000, (1, 128), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {"idx": torch.randint(0, 65, (1, 128), generator=g)}


def build(variant: str, path: Path) -> torch.nn.Module:
    model = mz.load(path)
    return mz.unpack(model) if variant == "fp32 cache" else model


def narrow(arch: dict) -> dict:
    """The same architecture with one narrow block: its forward initialises the same
    kernels and thread pools as the real model's, with next to no weights."""
    arch = json.loads(json.dumps(arch))
    if arch["kind"] == "hf":
        arch["config"].update(hidden_size=24, num_attention_heads=12, intermediate_size=48,
                              num_hidden_layers=1)
    else:
        arch["kwargs"].update(d_model=24, n_head=6, n_layer=1)
    return arch


def child(name: str, variant: str, path: str) -> None:
    """Runs in a fresh interpreter: print RSS figures as JSON."""
    from modelzip.io.arch import build as from_arch

    torch.set_num_threads(1)
    warm = from_arch(narrow(mz.read_manifest(path)["arch"])).eval()
    base = rss_mib()  # interpreter, torch, the architecture's modules
    if variant != "fp32":  # imports the packed layers' package
        mz.quantize(warm, mz.WeightOnly(bits=4, group_size=8))
    # a save + load of the narrow model: the loader's one-time costs (its load-time check
    # runs the architecture once on the meta device, which imports torch's Python
    # decompositions: ~75 MiB, the same for every variant) do not count as the model's
    warm = mz.loads(mz.dumps(warm, entropy="none"))
    with torch.inference_mode():
        warm(**inputs(name))
    del warm
    trim()
    warmed = rss_mib()  # ... and the kernels' first-use allocations
    model = build(variant, Path(path))
    with torch.inference_mode():
        model(**inputs(name))
    now = rss_mib()
    trim()
    print(json.dumps({"base": base, "warmed": warmed, "after": now, "trimmed": rss_mib(),
                      "peak": peak_mib()}))


def prepare() -> dict[str, dict[str, Path]]:
    """fp32 and 4-bit (RTN, group 128, packed) files of both models, in the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # weights' values do not change memory or time: untrained tiny_gpt
    models = {"minilm": hf.load_pretrained(hf.minilm_path()),
              "tiny_gpt": mz.zoo.tiny_gpt(**GPT)}
    files = {}
    for name, model in models.items():
        fp32, q4 = CACHE / f"packed_rt_{name}_fp32.mzip", CACHE / f"packed_rt_{name}_q4.mzip"
        mz.save(model, fp32, entropy="none")
        mz.quantize(model, mz.WeightOnly(bits=4, group_size=128))
        mz.save(model, q4, entropy="none")
        files[name] = {"fp32": fp32, "packed": q4, "fp32 cache": q4}
    return files


def measure_rss(name: str, variant: str, path: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", name, variant, str(path)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def latency(name: str, files: dict[str, Path], threads: int, repeats: int = 9
            ) -> dict[str, float]:
    torch.set_num_threads(threads)
    models = {v: build(v, files[v]) for v in VARIANTS}
    x = inputs(name)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        for m in models.values():
            m(**x)
        for _ in range(repeats):
            for v, m in models.items():
                t0 = time.perf_counter()
                m(**x)
                times[v].append(time.perf_counter() - t0)
    return {v: statistics.median(t) * 1e3 for v, t in times.items()}


def main() -> None:
    warnings.filterwarnings("ignore")
    files = prepare()
    rows, checks = [], []
    for name, paths in files.items():
        rss = {v: measure_rss(name, v, paths[v]) for v in VARIANTS}
        lat = {t: latency(name, paths, t) for t in (1, 2)}
        model_mib = {v: r["trimmed"] - r["warmed"] for v, r in rss.items()}
        raw = {v: r["trimmed"] - r["base"] for v, r in rss.items()}
        for v in VARIANTS:
            r = rss[v]
            rows.append([name, v, fmt(r["base"], 1), fmt(r["warmed"], 1), fmt(r["after"], 1),
                         fmt(r["trimmed"], 1), fmt(raw[v], 1), fmt(model_mib[v], 1),
                         fmt(model_mib[v] / model_mib["fp32"], 3), fmt(r["peak"], 1),
                         fmt(lat[1][v], 2), fmt(lat[2][v], 2),
                         fmt(lat[1][v] / lat[1]["fp32"], 2)])
        ratio = model_mib["packed"] / model_mib["fp32"]
        total = rss["packed"]["trimmed"] / rss["fp32"]["trimmed"]
        checks.append(f"{name}: loaded 4-bit packed model RSS {model_mib['packed']:.1f} MiB "
                      f"= {ratio:.3f}x the fp32 model's {model_mib['fp32']:.1f} MiB (target "
                      f"<= 0.35x: {'met' if ratio <= 0.35 else 'MISSED'}); counted from "
                      f"after imports only (warm-up allocations included): "
                      f"{raw['packed'] / raw['fp32']:.3f}x; whole-process RSS {total:.3f}x "
                      "(interpreter + torch + transformers included).")
    write_result(
        "packed_runtime", "Loaded 4-bit models: packed (default) vs fp32 cache vs fp32",
        [{"title": "RSS in MiB in a fresh process per variant (after imports; after mz.load "
                   "+ one forward; the same after malloc_trim(0); model RSS = trimmed minus "
                   "after a warm-up (a one-block, 24-wide model of the same architecture, "
                   "quantized like the variant, saved, loaded and run once: imports, the "
                   "loader's one-time costs, kernel first-use allocations); peak = VmHWM) "
                   "and forward "
                   "latency in ms (median of 9, "
                   "interleaved), input 1 x 128 tokens",
          "columns": ["model", "variant", "RSS after imports", "after warm-up",
                      "after load+forward", "same, heap trimmed", "model RSS from imports",
                      "model RSS", "model RSS vs fp32", "peak RSS",
                      "ms 1 thread",
                      "ms 2 threads", "latency vs fp32 (1 thread)"],
          "rows": rows}],
        anchors=["Issue 16 acceptance: a loaded 4-bit model's RSS at most 0.35x the fp32 "
                 "model's.", "Before this change (issue 16 text): MiniLM 4-bit took 288 MiB "
                 "RSS against 126 MiB for fp32 (fp32 weights cached beside the codes)."],
        notes=checks + [
            "4-bit RTN, group 128, all Linear and Embedding layers (MiniLM's word "
            "embeddings are half its weights); 'fp32 cache' = the same file loaded then "
            "mz.unpack(model): plain layers caching the dequantized fp32 weight.",
            "tiny_gpt: d_model 512, 7 blocks, 8 heads, 65 symbols (22.1M parameters; the "
            "default 1.9M-parameter size is too small for RSS to show the weights), "
            "untrained: memory and time do not depend on the weights' values.",
            "The warm-up includes a save + load of the narrow model: mz.load's load-time "
            "check runs the recorded architecture once on the meta device, which imports "
            "torch's Python decompositions (~75 MiB, once per process, the same for every "
            "variant), and a packed variant imports the quantization package; with a "
            "forward-only warm-up those one-time costs counted as model RSS (tiny_gpt 22M: "
            "0.62x; the 'model RSS from imports' column still includes them).",
            "Without the trim, glibc keeps the load's freed temporaries (file bytes, decoded "
            "tensors, the fp32 layers the packed ones replace) and RSS after load is about "
            "the same for every variant; the untrimmed column shows it.",
            "peak RSS includes building the architecture in fp32 before the packed layers "
            "replace it (mz.load builds the recorded architecture first); see docs.",
            "Latency was measured while the 2 cores ran a dozen other jobs (load average "
            "~15): absolute times are inflated many times and 2-thread figures are "
            "dominated by waiting for a descheduled thread; ratios within a row group are "
            "interleaved and comparable."])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        warnings.filterwarnings("ignore")
        child(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
