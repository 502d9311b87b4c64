"""Issue 14, benchmark 3: LeNet-5 (Fashion-MNIST) W8A8 static in ONNX Runtime. modelzip's
Int8 static export (QDQ convs fused by ORT into QLinearConv, integer Linear layers) against
ORT fp32 and ORT's own quantize_static (QDQ, same 16 calibration batches): accuracy on the
10k test images in ORT and latency at batch 1 and 64, 1 and 2 threads."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from common import fashion, fmt, trained_lenet5, write_result

import modelzip as mz
from modelzip.export.onnx_hf import normalize_inputs, trace_graph
from modelzip.export.onnx_runtime import OrtModule

OBSERVER = "percentile"  # the best observer in quant_lenet5.json
REPEATS = 40


def ort_quantize_static(fp32: Path, out: Path, calib: list) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input_0": x.numpy()} for x, _ in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True)


def interleaved(mods: dict, x: np.ndarray, repeats: int = REPEATS) -> dict[str, float]:
    """Median ms per run, contenders timed in turn so load hits all alike."""
    feeds = {k: {m.input_names[0]: x} for k, m in mods.items()}
    times = {k: [] for k in mods}
    for k, m in mods.items():
        for _ in range(3):
            m.sess.run(None, feeds[k])
    for _ in range(repeats):
        for k, m in mods.items():
            t0 = time.perf_counter()
            m.sess.run(None, feeds[k])
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main() -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    base = trained_lenet5().eval()
    data = fashion()
    calib = [b for _, b in zip(range(16), data.train, strict=False)]
    ours = mz.quantize(copy.deepcopy(base), mz.Int8(activations="static", observer=OBSERVER),
                       calib_data=calib)
    x64 = next(iter(data.test))[0][:64]
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        s = mz.export_onnx(ours, t / "ours.onnx", x64)
        trace_graph(copy.deepcopy(base), normalize_inputs(x64), t / "fp32.onnx", 17)
        ort_quantize_static(t / "fp32.onnx", t / "ortq.onnx", calib)
        files = {"ONNX Runtime: modelzip W8A8 static export": t / "ours.onnx",
                 "ONNX Runtime: quantize_static (QDQ, per-channel)": t / "ortq.onnx",
                 "ONNX Runtime: fp32": t / "fp32.onnx"}
        acc = {k: mz.accuracy(OrtModule(p, 2), data.test) for k, p in files.items()}
        acc["torch: modelzip W8A8 static"] = mz.accuracy(ours, data.test)
        acc["torch: fp32"] = mz.accuracy(base, data.test)
        lat = {}
        for threads in (1, 2):
            mods = {k: OrtModule(p, threads) for k, p in files.items()}
            for b in (1, 64):
                lat[threads, b] = interleaved(mods, x64[:b].numpy())
        sizes = {k: p.stat().st_size for k, p in files.items()}
    fp32 = acc["ONNX Runtime: fp32"]
    rows = []
    for k, a in acc.items():
        row = [k, fmt(100 * a, 2), fmt(100 * (fp32 - a), 2), sizes.get(k, "-")]
        for th in (1, 2):
            for b in (1, 64):
                row.append(fmt(lat[th, b][k], 3) if k in files else "-")
        rows.append(row)
    ours_k, fp_k = "ONNX Runtime: modelzip W8A8 static export", "ONNX Runtime: fp32"
    drop = 100 * (fp32 - acc[ours_k])
    notes = [f"modelzip W8A8 static in ORT: drop {drop:.2f} points vs ORT fp32 (target <= "
             f"0.3: {'met' if drop <= 0.3 else 'MISSED'})."]
    for th in (1, 2):
        r = lat[th, 64][fp_k] / lat[th, 64][ours_k]
        notes.append(f"batch 64, {th} thread(s): {r:.2f}x the speed of ORT fp32 (target > 1: "
                     f"{'met' if r > 1 else 'MISSED'}); batch 1: "
                     f"{lat[th, 1][fp_k] / lat[th, 1][ours_k]:.2f}x.")
    notes.append(f"Export operators: {s.operators}; check: normwise relative error "
                 f"{s.check['rel']:.3g}. Observer: {OBSERVER}; calibration: 16 training "
                 "batches of 64 (the same for ORT quantize_static).")
    write_result(
        "onnx_lenet5_qdq", "LeNet-5 W8A8 static in ONNX Runtime (QDQ) vs fp32 and ORT "
        "quantize_static",
        [{"title": "accuracy on 10k Fashion-MNIST test images; latency: median ms of "
                   f"{REPEATS} interleaved runs",
          "columns": ["runtime: model", "accuracy %", "drop vs ORT fp32 (points)",
                      "ONNX bytes", "1 thread b1 ms", "1 thread b64 ms", "2 threads b1 ms",
                      "2 threads b64 ms"],
          "rows": rows}],
        anchors=["Issue 14 target: W8A8 QDQ drop <= 0.3 points, faster than ORT fp32 at "
                 "batch 64."],
        notes=notes)


if __name__ == "__main__":
    main()
