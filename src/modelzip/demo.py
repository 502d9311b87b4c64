"""The README's main job: a real compression of a real model on bundled data.

Train LeNet-300-100, then ``mz.compress`` it with the built-in ``demo`` recipe (gradual
global magnitude pruning to 90% with fine-tuning, then 8-bit weight codes) under an
accuracy budget of one point; save the .mzip, load it back from disk, evaluate the loaded
model against the fp32 original and write an HTML report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import data as mzdata
from . import zoo
from .io.mzip import load, save
from .measure import count_params, model_latency
from .pipeline import compress
from .progress import note
from .report import report
from .state import logical_weights
from .train import accuracy, train

TRAINING = {"digits": (30, 2e-3), "fashion-mnist": (8, 1e-3)}  # epochs, lr
MAX_DROP = 0.01


def run_demo(dataset: str = "digits", out_dir: str | os.PathLike = "out", *,
             seed: int = 0, progress: bool = True, root: str | None = None) -> dict[str, Any]:
    """Run the demo pipeline; returns the before/after figures (files in ``out_dir``)."""
    torch.manual_seed(seed)
    note(f"loading {dataset}", progress=progress)
    split = mzdata.digits() if dataset == "digits" else mzdata.fashion_mnist(root=root)
    c, h, w = mzdata.info(split)["input_shape"]
    epochs, lr = TRAINING[dataset]
    model = zoo.lenet300(in_features=c * h * w)
    note(f"training LeNet-300-100 on {dataset} for {epochs} epochs", progress=progress)
    train(model, split.train, epochs=epochs, lr=lr, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32_path = out / "baseline_fp32.safetensors"
    save_file({k: v.contiguous() for k, v in logical_weights(model)}, str(fp32_path))

    def evaluate(m: torch.nn.Module) -> float:
        return accuracy(m, split.test)

    note("compressing with recipe 'demo' (baseline evaluation, then one status line per "
         "attempt)", progress=progress)
    res = compress(model, "demo", evaluate=evaluate, train_data=split.train,
                   max_drop=MAX_DROP, progress=progress)
    mzip_path = out / "lenet300.mzip"
    note(f"saving {mzip_path}, loading it back, measuring latency", progress=progress)
    save(res.model, mzip_path, info={"dataset": dataset, "recipe": "demo"})
    loaded = load(mzip_path)
    x = next(iter(split.test))[0][:1]
    report_path = report(loaded, model, result=res, example_inputs=x,
                         title=f"modelzip demo: LeNet-300-100 on {dataset}", file=mzip_path
                         ).to_html(out / "report.html")
    base_params, _ = count_params(model)
    params, nonzeros = count_params(loaded)
    lat_base = model_latency(model, x, repeats=50, num_threads=1)
    lat_comp = model_latency(loaded, x, repeats=50, num_threads=1)
    return {
        "dataset": dataset, "model": "lenet300", "recipe": "demo", "max_drop": MAX_DROP,
        "baseline": {"accuracy": res.metrics["baseline_metric"], "params": base_params,
                     "nonzeros": base_params, "bytes": fp32_path.stat().st_size,
                     "latency_ms": 1e3 * lat_base},
        "compressed": {"accuracy": evaluate(loaded), "params": params,
                       "nonzeros": nonzeros, "bytes": mzip_path.stat().st_size,
                       "latency_ms": 1e3 * lat_comp},
        "changed_units": res.metrics["changed_units"],
        "files": {"mzip": str(mzip_path), "fp32": str(fp32_path), "report": str(report_path)},
    }
