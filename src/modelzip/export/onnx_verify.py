"""Verification of an exported ONNX file in a fresh process, and the export summary.

The check runs ``onnxruntime`` in a new Python process (nothing of the exporting process,
no torch, no modelzip: only numpy and onnxruntime), feeds the example inputs from an
``.npz`` (loaded without pickle) and compares with modelzip's own outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError


class ExportError(UnsupportedModelError):
    """An export failed or its ONNX Runtime output does not match modelzip's."""


_SCRIPT = r"""
import json, sys
import numpy as np
import onnxruntime as ort
path, case, out = sys.argv[1:4]
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
try:
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    data = np.load(case, allow_pickle=False)
    feeds = {i.name: data["in_" + i.name] for i in sess.get_inputs()}
    outs = sess.run(None, feeds)
    got = outs[0] if len(outs) == 1 else np.concatenate([o.reshape(-1) for o in outs])
    got = got.astype(np.float64)
    ref = data["ref"].astype(np.float64)
    if got.shape != ref.shape:
        res = {"ok": False, "error": f"output shape {got.shape} != {ref.shape}"}
    else:
        err = float(np.abs(got - ref).max()) if ref.size else 0.0
        res = {"ok": True, "max_abs": err, "diff_norm": float(np.linalg.norm(got - ref)),
               "ref_norm": float(np.linalg.norm(ref)), "finite": bool(np.isfinite(got).all())}
except Exception as exc:
    res = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:400]}"}
with open(out, "w") as f:
    json.dump(res, f)
"""


def verify_fresh(path: Path, feeds: dict[str, np.ndarray], ref: np.ndarray,
                 workdir: Path, timeout: float = 900.0) -> dict[str, Any]:
    """Run ``path`` in ONNX Runtime in a new process: {max_abs, rel} where ``rel`` is the
    normwise relative error ||ORT - modelzip|| / ||modelzip||; ExportError on failure."""
    case, out = workdir / "case.npz", workdir / "result.json"
    np.savez(case, ref=ref, **{f"in_{k}": v for k, v in feeds.items()})
    try:
        proc = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(case), str(out)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportError("ONNX Runtime verification timed out") from None
    if not out.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise ExportError(f"ONNX Runtime verification process failed: {tail[0]}")
    res = json.loads(out.read_text())
    if not res.get("ok"):
        raise ExportError(f"ONNX Runtime cannot run the export: {res.get('error')}")
    res["rel"] = res["diff_norm"] / max(res["ref_norm"], 1e-12)
    return res


_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16",
           11: "float64", 9: "bool", 16: "bfloat16", 21: "uint4", 22: "int4"}


def graph_summary(path: Path) -> dict[str, Any]:
    """Operators used (domain-qualified, with counts) and initializer bytes per dtype."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = Counter((f"{n.domain}." if n.domain else "") + n.op_type for n in model.graph.node)
    by_dtype: Counter[str] = Counter()
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        by_dtype[_DTYPES.get(init.data_type, str(init.data_type))] += int(arr.nbytes)
    return {"operators": dict(sorted(ops.items())), "initializer_bytes": dict(by_dtype)}
