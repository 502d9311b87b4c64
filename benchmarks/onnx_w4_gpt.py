"""Issue 14, benchmark 2: 4-bit weight-only models in ONNX Runtime (MatMulNBits).

tiny_gpt (trained on Tiny Shakespeare, GPTQ 4-bit group 128 on the transformer blocks)
and a GPT-2-architecture model built from a config (768 wide, 4 layers, 8192-token vocab,
random weights, RTN 4-bit group 128 on every Linear and the token embedding). ORT
MatMulNBits (accuracy_level 4) vs ORT fp32 vs torch fp32 (and modelzip's torch model):
per-token latency at batch 1, prefill throughput, ONNX bytes, and tiny_gpt's perplexity
in ORT against modelzip's. These are the plain exports (no KV cache; ``decode=True``
gives a decode step with past key/values for Hugging Face causal LMs, see
docs/deploy.md): the per-token figure is one forward step over one new token (batch 1,
sequence 1: the matmul shapes of cached decoding), and the prefill figure a 128-token
forward."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import fmt, shakespeare, trained_tiny_gpt, write_result

import modelzip as mz
from modelzip.export.onnx_hf import linear_from_conv1d, normalize_inputs, trace_graph
from modelzip.export.onnx_runtime import OrtModule

REPEATS = 30


def gpt2_shape() -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=8192, n_embd=768, n_layer=4, n_head=12, n_positions=256)
    return linear_from_conv1d(tf.GPT2LMHeadModel(cfg).eval())


def timed(fns: dict, x: torch.Tensor) -> dict[str, float]:
    """Median seconds per call, contenders in turn."""
    times = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():
            fn(x), fn(x)
        for _ in range(REPEATS):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn(x)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def contenders(name: str, base, quant, example, tmp: Path, hf: bool):
    """Export (Hugging Face models by keyword: no cache), then the export summary and
    {label: ONNX path}."""
    ex = {"input_ids": example} if hf else example
    s = mz.export_onnx(quant, tmp / f"{name}.onnx", ex)
    trace_graph(copy.deepcopy(base), normalize_inputs(ex), tmp / f"{name}32.onnx", 17)
    return s, {"ORT MatMulNBits 4-bit": tmp / f"{name}.onnx",
               "ORT fp32": tmp / f"{name}32.onnx"}


def run_model(name: str, base, quant, example, tmp: Path, rows: list, threads: int,
              hf: bool) -> dict:
    s, files = contenders(name, base, quant, example, tmp, hf)
    out = {"summary": s, "fp32_file": files["ORT fp32"].stat().st_size}

    def call(m):
        return (lambda x: m(input_ids=x, use_cache=False).logits) if hf else m

    for th in (1, threads):
        torch.set_num_threads(th)
        fns = {k: OrtModule(p, th) for k, p in files.items()}
        fns["torch fp32"] = call(base)
        fns["torch modelzip 4-bit"] = call(quant)
        one = timed(fns, example[:, :1])
        pre = timed(fns, example)
        for k in fns:
            p = files.get(k)
            rows.append([name, k, th, fmt(1e3 * one[k], 3), fmt(example.shape[1] / pre[k], 0),
                         p.stat().st_size if p else "-"])
        out[th] = (one, pre)
    return out


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows: list = []
    split = shakespeare(128, 32)
    calib = [b for _, b in zip(range(8), split.train, strict=False)]
    tiny = trained_tiny_gpt().eval()
    tq = mz.quantize(copy.deepcopy(tiny), mz.WeightOnly(bits=4, group_size=128, method="gptq",
                                                        targets=["re:blocks\\..*"]),
                     calib_data=calib)
    g2 = gpt2_shape()
    g2q = mz.quantize(copy.deepcopy(g2), mz.WeightOnly(bits=4, group_size=128,
                                                       targets=["Linear", "Embedding"]))
    ex = next(iter(split.test))[0][:1]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        res_t = run_model("tiny_gpt", tiny, tq, ex, t, rows, 2, False)
        # inference mode as in the timings: packed layers share a scratch buffer created
        # there, which plain no_grad code may not write (an inference tensor)
        with torch.inference_mode():
            ppl = {"modelzip (torch)": mz.perplexity(tq, split.test),
                   "ONNX Runtime": mz.perplexity(OrtModule(t / "tiny_gpt.onnx", 2),
                                                 split.test),
                   "torch fp32": mz.perplexity(tiny, split.test)}
        ids = torch.randint(0, 8192, (1, 128), generator=torch.Generator().manual_seed(0))
        res_g = run_model("gpt2-shape", g2, g2q, ids, t, rows, 2, True)
    write_tables(rows, ppl, {"tiny_gpt": res_t, "gpt2-shape": res_g})


def write_tables(rows: list, ppl: dict, res: dict) -> None:
    notes = []
    for name, r in res.items():
        s = r["summary"]
        w = sum(v for k, v in s.initializer_bytes.items())
        dense = r["fp32_file"]
        wr = w / dense
        for th in (1, 2):
            one = r[th][0]
            lr = one["ORT MatMulNBits 4-bit"] / one["torch fp32"]
            notes.append(f"{name}, {th} thread(s): per-token latency {lr:.3f}x torch fp32 "
                         f"(target <= 0.333: {'met' if lr <= 1 / 3 else 'MISSED'}), "
                         f"{one['ORT MatMulNBits 4-bit'] / one['ORT fp32']:.3f}x ORT fp32.")
        notes.append(f"{name}: ONNX initializers {w:,} bytes = {wr:.3f}x the fp32 ONNX file "
                     f"{dense:,} (target <= 0.3: {'met' if wr <= 0.3 else 'MISSED'}"
                     f"); file {s.file_bytes:,}, .mzip {s.mzip_bytes:,}; check: normwise "
                     f"relative error {s.check['rel']:.3g}, accuracy_level "
                     f"{s.accuracy_level}.")
    d = abs(ppl["ONNX Runtime"] / ppl["modelzip (torch)"] - 1)
    notes.append(f"tiny_gpt perplexity: ORT {ppl['ONNX Runtime']:.4f} vs modelzip "
                 f"{ppl['modelzip (torch)']:.4f} ({100 * d:.2f}% apart; target <= 0.5%: "
                 f"{'met' if d <= 0.005 else 'MISSED'}); fp32 {ppl['torch fp32']:.4f}.")
    write_result(
        "onnx_w4_gpt", "4-bit weight-only GPTs in ONNX Runtime (MatMulNBits) vs fp32",
        [{"title": "batch 1; per-token = one step over one new token (no KV cache in the "
                   "graph); prefill = 128 tokens; medians of 30 interleaved runs",
          "columns": ["model", "runtime", "threads", "per-token ms", "prefill tokens/s",
                      "ONNX bytes"], "rows": rows},
         {"title": "tiny_gpt validation perplexity (GPTQ 4-bit, group 128)",
          "columns": ["runtime", "perplexity"],
          "rows": [[k, fmt(v, 4)] for k, v in ppl.items()]}],
        anchors=["Issue 14 target: per-token latency at batch 1 <= 1/3 of torch fp32; ONNX "
                 "weights <= 0.3x the fp32 ONNX file; perplexity equal to modelzip's within "
                 "0.5%."],
        notes=notes)


if __name__ == "__main__":
    main()
