"""Shared by every benchmark: the machine description and the results JSON.

Each benchmark script writes ``benchmarks/results/<name>.json`` through
:func:`write_result`; ``run_all.py`` renders all of them into ``RESULTS.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}


def data_root() -> Path | None:
    """Folder with fashion-mnist/ and tinyshakespeare/ ($MODELZIP_DATA or ../shared)."""
    for cand in (os.environ.get("MODELZIP_DATA"), REPO.parent / "shared" / "datasets"):
        if cand and (Path(cand) / "fashion-mnist").is_dir():
            return Path(cand)
    return None


def write_result(name: str, title: str, tables: list[dict[str, Any]], *,
                 anchors: list[str] | None = None, notes: list[str] | None = None,
                 extra: dict[str, Any] | None = None, script: str | None = None) -> Path:
    """Write one benchmark's figures (``script``: the script's name when it is not
    ``name``, e.g. a second result of one script).

    ``tables``: ``[{"title": str, "columns": [str], "rows": [[value, ...]]}]``.
    ``anchors``: the published figures the issue names, as sentences with sources.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "script": script or name, "title": title,
               "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "tables": tables, "anchors": anchors or [],
               "notes": notes or [], **(extra or {})}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def launch_ranks(job: str, tmp: Path, ranks: int, threads: int, tag: str,
                 timeout: int = 1800, env: dict[str, str] | None = None) -> Path:
    """Run the script text ``job`` in fresh processes: plain Python for one rank, torchrun
    (--standalone) for more; its argv is (output path, threads). Returns the output path."""
    import subprocess
    import sys

    script, out = tmp / f"{tag}.py", tmp / f"{tag}.json"
    script.write_text(job)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": str(threads),
           **(env or {})}
    cmd = [sys.executable] + (["-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={ranks}"] if ranks > 1 else [])
    res = subprocess.run([*cmd, str(script), str(out), str(threads)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


RANK_CONFIGS = ((1, 1), (1, 2), (2, 1))  # (ranks, threads per rank)


def rank_runs(job: str, tmp: Path, repeats: int, **kw: Any) -> dict[tuple[int, int], list[Path]]:
    """``job`` under every RANK_CONFIGS entry, the configurations alternating within each
    repeat (so load affects all alike); the output paths per configuration."""
    runs: dict[tuple[int, int], list[Path]] = {c: [] for c in RANK_CONFIGS}
    for rep in range(repeats):
        for ranks, threads in RANK_CONFIGS:
            out = launch_ranks(job, tmp, ranks, threads, f"r{ranks}t{threads}x{rep}", **kw)
            runs[(ranks, threads)].append(out)
            print(ranks, threads, out.read_text()[:120], flush=True)
    return runs


def fmt(v: Any, digits: int = 4) -> Any:
    """Round floats for tables."""
    return round(v, digits) if isinstance(v, float) else v


# ------------------------------------------------------------ cached reference models
CACHE = Path(os.environ.get("MODELZIP_CACHE", Path.home() / ".cache" / "modelzip"))
REFERENCE = {  # name -> training budget (kept fixed so every benchmark shares one baseline)
    "lenet300_fashion": {"epochs": 20, "lr": 1e-3},
    "lenet5_fashion": {"epochs": 15, "lr": 1e-3},
    "tiny_gpt_shakespeare": {"steps": 1000, "lr": 2e-3, "batch_size": 16, "seq_len": 128},
    # six times the characters: for the pruning comparison, where how well trained the
    # model is decides which features carry large activations
    "tiny_gpt_shakespeare_long": {"steps": 3000, "lr": 2e-3, "batch_size": 32,
                                  "seq_len": 128},
}


def _cached(name: str, build: Any, train_fn: Any, info: dict[str, Any] | None = None) -> Any:
    """Load ``name`` from the cache, or train it once (file-locked across processes).

    ``info`` (the training budget) defaults to ``REFERENCE[name]``."""
    import fcntl

    import modelzip as mz

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.mzip"
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return mz.load(path, model=build())
        torch.manual_seed(0)
        model = build()
        train_fn(model)
        mz.save(model, path, info={"reference": name, **(info or REFERENCE[name])})
        return model


def fashion(**kw: Any) -> Any:
    import modelzip as mz

    root = data_root()
    if root is None:
        raise SystemExit("Fashion-MNIST not found: set MODELZIP_DATA")
    return mz.data.fashion_mnist(root=root, **kw)


def trained_lenet300() -> Any:
    """LeNet-300-100 trained on Fashion-MNIST with the fixed reference budget (cached)."""
    import modelzip as mz

    b = REFERENCE["lenet300_fashion"]
    return _cached("lenet300_fashion", mz.zoo.lenet300,
                   lambda m: mz.train(m, fashion().train, epochs=b["epochs"], lr=b["lr"]))


def trained_lenet5() -> Any:
    """LeNet-5 trained on Fashion-MNIST with the fixed reference budget (cached)."""
    import modelzip as mz

    b = REFERENCE["lenet5_fashion"]
    return _cached("lenet5_fashion", mz.zoo.lenet5,
                   lambda m: mz.train(m, fashion().train, epochs=b["epochs"], lr=b["lr"]))


def shakespeare(seq_len: int = 128, batch_size: int = 32, **kw: Any) -> Any:
    import modelzip as mz

    root = data_root()
    if root is None:
        raise SystemExit("Tiny Shakespeare not found: set MODELZIP_DATA")
    return mz.data.text(root / "tinyshakespeare" / "input.txt", seq_len=seq_len,
                        batch_size=batch_size, **kw)


def trained_tiny_gpt(name: str = "tiny_gpt_shakespeare") -> Any:
    """tiny_gpt (default size, 65-char vocab) trained on Tiny Shakespeare (cached).

    Trained on overlapping windows (stride 16) for the steps of ``REFERENCE[name]``."""
    import modelzip as mz

    b = REFERENCE[name]
    split = shakespeare(b["seq_len"], b["batch_size"], stride=16)
    vocab = mz.data.info(split)["vocab_size"]
    epochs = b["steps"] / len(split.train)
    return _cached(name, lambda: mz.zoo.tiny_gpt(vocab_size=vocab, seq_len=b["seq_len"]),
                   lambda m: mz.train(m, split.train, epochs=epochs, lr=b["lr"]))
