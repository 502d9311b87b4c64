"""Acceptance 1: all-MiniLM-L6-v2 with Int8(activations="dynamic") against fp32, torch's
quantize_dynamic and ONNX Runtime's quantize_dynamic: embedding cosine and throughput."""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import Any

import torch
from _quant_common import N_EVAL, cosine, interleaved_times, minilm
from common import fmt, write_result

import modelzip as mz
from modelzip.io import hf

THREADS = 1


class _Hidden(torch.nn.Module):
    """Positional-input wrapper returning last_hidden_state (for the ONNX exporter)."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs, strict=True))).last_hidden_state


def ort_sessions(model: torch.nn.Module, example: dict, tmp: str) -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = os.path.join(tmp, "minilm.onnx")
    int8 = os.path.join(tmp, "minilm.int8.onnx")
    names = list(example)
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "seq"}
    torch.onnx.export(_Hidden(model, names).eval(), tuple(example[n] for n in names), fp32,
                      input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    model.eval()
    quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    out = {}
    for key, path in (("ort_fp32", fp32), ("ort_int8", int8)):
        out[key] = (ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]),
                    os.path.getsize(path))
    return out


def ort_embed(sess: Any, batch: dict) -> torch.Tensor:
    feeds = {k: v.numpy() for k, v in batch.items()}
    hidden = torch.from_numpy(sess.run(None, feeds)[0])
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(emb, dim=-1)


def main() -> None:
    torch.set_num_threads(THREADS)
    warnings.filterwarnings("ignore")
    model, _, evals, calib = minilm()
    ref = hf.sentence_embeddings(model, evals)
    ours = mz.quantize(copy.deepcopy(model), mz.Int8(activations="dynamic"))
    ours_sq = mz.quantize(copy.deepcopy(model), mz.Int8(smoothquant=0.5), calib_data=calib)
    peer = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                  dtype=torch.qint8)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"fp32": mz.save(model, os.path.join(tmp, "fp32.mzip")),
                 "ours": mz.save(ours, os.path.join(tmp, "ours.mzip")),
                 "ours_sq": mz.save(ours_sq, os.path.join(tmp, "sq.mzip"))}
        loaded = mz.load(os.path.join(tmp, "ours.mzip"))
        reload_same = bool(torch.equal(hf.sentence_embeddings(loaded, evals[:2]),
                                       hf.sentence_embeddings(ours, evals[:2])))
        ort = ort_sessions(model, evals[0], tmp)
        assert not model.training and torch.equal(hf.sentence_embeddings(model, evals[:1]),
                                                  ref[: len(evals[0]["input_ids"])])
        fns = {
            "torch fp32": lambda b: hf.sentence_embeddings(model, [b]),
            "modelzip Int8 dynamic": lambda b: hf.sentence_embeddings(ours, [b]),
            "modelzip Int8 dynamic + SmoothQuant 0.5": lambda b: hf.sentence_embeddings(
                ours_sq, [b]),
            "torch quantize_dynamic": lambda b: hf.sentence_embeddings(peer, [b]),
            "ONNX Runtime fp32": lambda b: ort_embed(ort["ort_fp32"][0], b),
            "ONNX Runtime quantize_dynamic": lambda b: ort_embed(ort["ort_int8"][0], b),
        }
        with torch.inference_mode():
            embs = {k: torch.cat([fn(b) for b in evals]) for k, fn in fns.items()}
        times = interleaved_times(fns, evals)
    file_mb = {"torch fp32": sizes["fp32"], "modelzip Int8 dynamic": sizes["ours"],
               "modelzip Int8 dynamic + SmoothQuant 0.5": sizes["ours_sq"],
               "ONNX Runtime fp32": ort["ort_fp32"][1],
               "ONNX Runtime quantize_dynamic": ort["ort_int8"][1]}
    rows = []
    base = times["torch fp32"]
    for k in fns:
        mean, low = cosine(embs[k], ref)
        mb = file_mb.get(k)
        rows.append([k, fmt(mean, 4), fmt(low, 4), fmt(N_EVAL / times[k], 1),
                     fmt(base / times[k], 2), fmt(mb / 1e6, 2) if mb else "-"])
    ratio = base / times["modelzip Int8 dynamic"]
    cos = cosine(embs["modelzip Int8 dynamic"], ref)[0]
    write_result(
        "quant_minilm_int8", "all-MiniLM-L6-v2: int8 dynamic quantization vs peers",
        [{"title": f"{N_EVAL} Tiny Shakespeare sentences (calibration: 128 others), "
                   f"{THREADS} thread, batch 32",
          "columns": ["model", "mean cosine vs fp32", "min cosine", "sentences/s",
                      "speed-up vs torch fp32", "file MB"],
          "rows": rows}],
        anchors=["Issue target: mean cosine >= 0.99 and >= 2.5x the fp32 torch throughput.",
                 "Measured before on this machine (issue): torch quantize_dynamic 2.6x at "
                 "cosine 0.930; ONNX Runtime quantize_dynamic 2.8x at 0.955."],
        notes=[f"modelzip Int8 dynamic: cosine {cos:.4f} (target 0.99: "
               f"{'met' if cos >= 0.99 else 'MISSED'}), {ratio:.2f}x fp32 (target 2.5x: "
               f"{'met' if ratio >= 2.5 else 'MISSED'}).",
               "Throughput: every batch is run by every model in turn, 3 times; the fastest "
               "run per (model, batch) is summed (robust to load from other processes).",
               "Int8Linear: int8 weight codes per output channel, per-token int8 "
               "activations, torch._int_mm (int8 x int8 -> int32), one fused rescale. "
               "Attention score/context matmuls, LayerNorm and GELU stay fp32 in all "
               "torch rows.",
               f"Reloaded .mzip gives identical embeddings: {reload_same}."])


if __name__ == "__main__":
    main()
