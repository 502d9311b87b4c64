"""The README's main job: a real compression of a real model on bundled data.

Train LeNet-300-100, prune 90% of its weights globally (gradually, with fine-tuning),
quantize the survivors to 8-bit codes, save the .mzip, load it back from disk and
evaluate the loaded model against the fp32 original.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import data as mzdata
from . import zoo
from .io.mzip import load, save
from .measure import count_params, model_latency
from .pruning import Magnitude, iterative_prune
from .quantization import WeightOnly
from .state import logical_weights
from .train import accuracy, train
from .verbs import quantize

SETTINGS = {  # dataset -> (train epochs, lr, prune steps, epochs per step, final epochs)
    "digits": (30, 2e-3, 4, 6, 10),
    "fashion-mnist": (8, 1e-3, 4, 1, 2),
}


def run_demo(dataset: str = "digits", out_dir: str | os.PathLike = "out", *,
             sparsity: float = 0.9, bits: int = 8, seed: int = 0, progress: bool = True,
             root: str | None = None) -> dict[str, Any]:
    """Run the demo pipeline; returns the before/after figures (also files in out_dir)."""
    torch.manual_seed(seed)
    split = mzdata.digits() if dataset == "digits" else mzdata.fashion_mnist(root=root)
    c, h, w = mzdata.info(split)["input_shape"]
    epochs, lr, steps, step_epochs, final_epochs = SETTINGS[dataset]
    model = zoo.lenet300(in_features=c * h * w)
    train(model, split.train, epochs=epochs, lr=lr, progress=progress)
    baseline = copy.deepcopy(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fp32_path = out / "baseline_fp32.safetensors"
    save_file({k: v.contiguous() for k, v in logical_weights(baseline)}, str(fp32_path))

    cfg = Magnitude(sparsity=sparsity, scope="global")
    iterative_prune(model, cfg, split.train, steps=steps, epochs_per_step=step_epochs,
                    lr=lr / 2, progress=progress)
    train(model, split.train, epochs=final_epochs, lr=lr / 4, progress=progress)
    quantize(model, WeightOnly(bits=bits, group_size=None))
    mzip_path = out / "lenet300.mzip"
    save(model, mzip_path, info={"dataset": dataset, "pipeline": "demo"})
    loaded = load(mzip_path)

    x = next(iter(split.test))[0][:1]
    base_params, _ = count_params(baseline)
    params, nonzeros = count_params(loaded)
    lat_base = model_latency(baseline, x, repeats=50, num_threads=1)
    lat_comp = model_latency(loaded, x, repeats=50, num_threads=1)
    return {
        "dataset": dataset, "model": "lenet300",
        "baseline": {"accuracy": accuracy(baseline, split.test), "params": base_params,
                     "nonzeros": base_params, "bytes": fp32_path.stat().st_size,
                     "latency_ms": 1e3 * lat_base},
        "compressed": {"accuracy": accuracy(loaded, split.test), "params": params,
                       "nonzeros": nonzeros, "bytes": mzip_path.stat().st_size,
                       "latency_ms": 1e3 * lat_comp},
        "files": {"mzip": str(mzip_path), "fp32": str(fp32_path)},
    }
