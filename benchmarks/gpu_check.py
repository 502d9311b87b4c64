"""Issue 16: the CUDA path. When a CUDA device exists, run GPTQ, SparseGPT and Int8 static
on a Llama model built from a config with ``device="cuda"`` (blocks move to the GPU one
at a time, the model stays on the CPU), and training with ``device="cuda"``; check the
results against the CPU path, and time both; otherwise record that no GPU was available."""

from __future__ import annotations

import copy
import time

import torch
from common import fmt, write_result

import modelzip as mz


def _llama(layers: int = 4) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=512, intermediate_size=1408,
                                   num_hidden_layers=layers, num_attention_heads=8,
                                   num_key_value_heads=2, vocab_size=2000)
    return transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def main() -> None:
    if not torch.cuda.is_available():
        write_result("gpu_check", "CUDA path of the block engine",
                     [{"title": "no GPU", "columns": ["status"],
                       "rows": [["no GPU: torch.cuda.is_available() is False on this "
                                 "machine; the CUDA path was not run"]]}],
                     notes=["Device plumbing is tested on CPU (tests/test_blockwise.py)."])
        return
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": torch.randint(0, 2000, (4, 256), generator=g)} for _ in range(8)]
    base = _llama()
    rows = []
    for name, verb, cfg in [
        ("GPTQ w4 g128", mz.quantize, mz.WeightOnly(bits=4, group_size=128, method="gptq",
                                                    targets=["re:model\\.layers\\..*"])),
        ("SparseGPT 50%", mz.prune, mz.SparseGPT(sparsity=0.5,
                                                targets=["re:model\\.layers\\..*"])),
    ]:
        out = {}
        for dev in ("cpu", "cuda"):
            m = copy.deepcopy(base)
            t0 = time.perf_counter()
            verb(m, cfg, calib_data=data, device=dev)
            sec = time.perf_counter() - t0
            with torch.no_grad():
                out[dev] = (m(**data[0]).logits.float(), sec)
        ref = base(**data[0]).logits.float()
        err = {d: float(((o - ref) ** 2).mean()) for d, (o, _) in out.items()}
        rows.append([name, fmt(out["cpu"][1], 2), fmt(out["cuda"][1], 2),
                     fmt(err["cpu"], 6), fmt(err["cuda"], 6)])
    rows.append(_train_row())
    rows.append(_cluster_row(base))
    write_result("gpu_check", "CUDA path of the block engine (4-layer Llama, bf16) and of "
                 "training",
                 [{"title": torch.cuda.get_device_name(0),
                   "columns": ["method", "cpu s", "cuda s", "cpu output MSE",
                               "cuda output MSE"], "rows": rows}])


def _cluster_row(base: torch.nn.Module) -> list:
    """k-means weight sharing (16 clusters) of the Llama's block layers on each device;
    the output MSE columns hold the share of cluster codes that differ from the CPU's."""
    codes, secs = {}, {}
    for dev in ("cpu", "cuda"):
        m = copy.deepcopy(base)
        t0 = time.perf_counter()
        mz.cluster(m, mz.Cluster(clusters=16, targets=["re:model\\.layers\\..*"]),
                   device=dev)
        secs[dev] = time.perf_counter() - t0
        codes[dev] = torch.cat([b.reshape(-1).long() for n, b in m.named_buffers()
                                if n.endswith("weight_codes")])
    diff = float((codes["cpu"] != codes["cuda"]).float().mean())
    return ["k-means 16 clusters (codes differing)", fmt(secs["cpu"], 2),
            fmt(secs["cuda"], 2), 0.0, fmt(diff, 6)]


def _train_row() -> list:
    """LeNet-300-100 on digits, 5 epochs with device="cpu" and device="cuda" (the model
    moves for the run and back): seconds, and test accuracy in place of the MSE columns."""
    split = mz.data.digits()
    res = {}
    for dev in ("cpu", "cuda"):
        torch.manual_seed(0)
        m = mz.zoo.lenet300(in_features=64)
        t0 = time.perf_counter()
        mz.train(m, split.train, epochs=5, lr=1e-3, progress=False, device=dev)
        res[dev] = (time.perf_counter() - t0, mz.accuracy(m, split.test, device=dev))
    return ["train 5 epochs (accuracy)", fmt(res["cpu"][0], 2), fmt(res["cuda"][0], 2),
            fmt(res["cpu"][1]), fmt(res["cuda"][1])]


if __name__ == "__main__":
    main()
