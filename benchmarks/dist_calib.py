"""Calibration across ranks (issue 17, benchmark 3): GPTQ 4-bit on tiny_gpt with its
calibration set split over 2 ranks (torchrun, gloo, CPU) against 1 process.

Each rank takes every second calibration batch; the Hessians are all-reduced before every
solve, so both runs should produce the same integer codes. Reported: the share of codes
that agree, the largest scale difference, perplexity of both models, and the wall time of
``mz.quantize`` (statistics pass + solves; every rank solves every layer, so only the
statistics pass is split). Runs alternate, medians of repeats.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import textwrap
from pathlib import Path

from common import RANK_CONFIGS, REPO, fmt, rank_runs, trained_tiny_gpt, write_result

REPEATS = 2
CALIB_SEQS = 256  # 256 x 128 tokens, 16 batches of 16
JOB = textwrap.dedent("""
    import json, sys, time, torch
    sys.path.insert(0, {bench!r})
    from common import shakespeare, trained_tiny_gpt
    from safetensors.torch import save_file
    import modelzip as mz
    from modelzip.distributed import ddp
    torch.set_num_threads(int(sys.argv[2]))
    ddp.init_from_env()
    model = trained_tiny_gpt()
    split = shakespeare(128, 16)
    batches = [b for _, b in zip(range({seqs} // 16), split.train)]
    cfg = mz.WeightOnly(bits=4, group_size=32, method="gptq", packed=False)
    ddp.barrier()
    t0 = time.perf_counter()
    mz.quantize(model, cfg, calib_data=batches)
    seconds = time.perf_counter() - t0
    if ddp.is_main():
        ppl = mz.perplexity(model, split.test, max_batches=20)
        state = {{k: v.contiguous() for k, v in model.state_dict().items()
                 if k.endswith(("_codes", "_scale"))}}
        save_file(state, sys.argv[1] + ".safetensors")
        with open(sys.argv[1], "w") as f:
            json.dump({{"seconds": seconds, "ppl": ppl}}, f)
    ddp.shutdown()
""").format(bench=str(REPO / "benchmarks"), seqs=CALIB_SEQS)


def compare(a: str, b: str) -> tuple[float, int, float]:
    """(share of equal codes, codes that differ, largest relative scale difference)."""
    from safetensors.torch import load_file

    sa, sb = load_file(a), load_file(b)
    assert sa.keys() == sb.keys()
    same = total = 0
    scale = 0.0
    for k in sa:
        if k.endswith("_codes"):
            same += int((sa[k] == sb[k]).sum())
            total += sa[k].numel()
        else:
            rel = (sa[k] - sb[k]).abs() / sa[k].abs().clamp(min=1e-12)
            scale = max(scale, float(rel.max()))
    return same / total, total - same, scale


def main() -> None:
    trained_tiny_gpt()  # train/cache once, before the ranks read it
    configs = RANK_CONFIGS
    with tempfile.TemporaryDirectory() as tmp:
        outs = rank_runs(JOB, Path(tmp), REPEATS, env={"MODELZIP_NO_PROGRESS": "1"})
        runs = {c: [json.loads(p.read_text()) for p in ps] for c, ps in outs.items()}
        share, differ, scale = compare(f"{outs[(1, 1)][0]}.safetensors",
                                       f"{outs[(2, 1)][0]}.safetensors")
    med = {c: statistics.median(r["seconds"] for r in runs[c]) for c in configs}
    rows = [[f"{c[0]} rank(s) x {c[1]} thread(s)", fmt(runs[c][0]["ppl"]), fmt(med[c], 2),
             [fmt(r["seconds"], 2) for r in runs[c]], fmt(med[c] / med[(1, 1)], 2)]
            for c in configs]
    write_result(
        "dist_calib", "Calibration across ranks: GPTQ statistics from 2 ranks vs 1",
        [{"title": "tiny_gpt (Tiny Shakespeare), GPTQ 4-bit group 32, "
                   f"{CALIB_SEQS} x 128-token calibration sequences",
          "columns": ["configuration", "perplexity after", "quantize s (median)", "all runs",
                      "time / 1x1"], "rows": rows},
         {"title": "2 ranks against 1: the quantized weights",
          "columns": ["codes equal", "codes differing", "largest relative scale difference"],
          "rows": [[f"{share:.6%}", differ, f"{scale:.1e}"]]}],
        anchors=["Issue 17 benchmark 3: calibration with 2 ranks vs 1, same quantized weights "
                 "within tolerance, and time; llm-compressor's distributed one-shot likewise "
                 "all-reduces the GPTQ Hessians before each solve."],
        notes=["Each rank takes every world-th calibration batch; Hessians are summed across "
               "ranks (float32 all-reduce), so only the summation order differs from 1 rank.",
               "Every rank then runs the same GPTQ solves, so the speed-up is bounded by the "
               "share of time spent in the statistics pass; on this 2-core machine two "
               "ranks of 1 thread compete with one process of 2 threads.",
               f"Machine: {os.cpu_count()} cores."],
        extra={"codes_equal": share, "codes_differing": differ, "max_scale_rel": scale})


if __name__ == "__main__":
    main()
