"""Acceptance 3: tiny_gpt on Tiny Shakespeare, 50% and 2:4 with magnitude, Wanda, SparseGPT.

Validation perplexity of the cached reference model, one-shot (no fine-tuning) pruning of
every Linear inside the transformer blocks; 128 training windows for calibration.
"""

from __future__ import annotations

import copy
import time

import torch
from common import REFERENCE, fmt, shakespeare, trained_tiny_gpt, write_result

import modelzip as mz
from modelzip.calib import collect
from modelzip.measure import file_bytes
from modelzip.ops.sparsity import rowwise_mask, wanda_scores
from modelzip.pruning.magnitude import magnitude_masks
from modelzip.pruning.nm import apply_keep


def ablation(base: torch.nn.Module, calib: list, test) -> tuple[list, tuple[float, float]]:
    """Score (|W| or Wanda's |W|*||X_j||) x comparison group (output row or whole layer).

    One shot at 50% from the dense model's input norms; tells whether Wanda's gap to
    magnitude comes from its score or from its per-row comparison group.
    """
    layers = {n: m for n, m in base.named_modules()
              if isinstance(m, torch.nn.Linear) and n != "head"}
    stats = collect(base, layers, calib, hessian=False)
    rows = []
    for score in ("|W|", "|W|*||X||"):
        for group in ("row", "layer"):
            model = copy.deepcopy(base)
            for name, module in model.named_modules():
                if name in layers:
                    s = module.weight.detach().abs()
                    if score != "|W|":
                        s = wanda_scores(module.weight, stats[name].l2_norm)
                    keep = (rowwise_mask(s, 0.5) if group == "row"
                            else magnitude_masks([s], 0.5, "layer")[0])
                    apply_keep(module, keep)
            rows.append([score, group, fmt(mz.perplexity(model, test), 3)])
            print(rows[-1], flush=True)
    norms = [float(st.l2_norm.max() / st.l2_norm.median()) for st in stats.values()]
    return rows, (min(norms), max(norms))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    base = trained_tiny_gpt().eval()
    split = shakespeare(128, 32)
    g = torch.Generator().manual_seed(0)
    windows = split.train.dataset
    pick = torch.randperm(len(windows), generator=g)[:128]
    calib = [windows[pick[i:i + 32]] for i in range(0, 128, 32)]
    dense_ppl = mz.perplexity(base, split.test)
    dense_bytes = file_bytes(base)
    ignore = ["head"]
    settings = {
        "50%": [("magnitude", mz.Magnitude(0.5, ignore=ignore)),
                ("Wanda", mz.Wanda(0.5, ignore=ignore)),
                ("SparseGPT", mz.SparseGPT(0.5, ignore=ignore))],
        "2:4": [("magnitude", mz.NM(2, 4, ignore=ignore)),
                ("Wanda", mz.Wanda(n=2, m=4, ignore=ignore)),
                ("SparseGPT", mz.SparseGPT(n=2, m=4, ignore=ignore))],
    }
    rows = [["dense (fp32)", "-", fmt(dense_ppl, 3), dense_bytes, "-"]]
    ppl: dict[tuple[str, str], float] = {}
    for setting, methods in settings.items():
        for name, cfg in methods:
            model = copy.deepcopy(base)
            t0 = time.perf_counter()
            mz.prune(model, cfg, calib_data=calib)
            took = time.perf_counter() - t0
            ppl[name, setting] = mz.perplexity(model, split.test)
            rows.append([name, setting, fmt(ppl[name, setting], 3), file_bytes(model),
                         fmt(took, 1)])
            print(rows[-1], flush=True)
    abl, (lo, hi) = ablation(base, calib, split.test)
    beat = {f"{m} {s}": ppl[m, s] < ppl["magnitude", s] for s in settings
            for m in ("Wanda", "SparseGPT")}
    write_result(
        "prune_tiny_gpt", "One-shot LLM-style pruning of tiny_gpt (Tiny Shakespeare)",
        [{"title": "Validation perplexity (character level, full validation split)",
          "columns": ["method", "sparsity", "val perplexity", ".mzip bytes", "prune time s"],
          "rows": rows},
         {"title": "Ablation at 50%: pruning score x comparison group (one shot, no update)",
          "columns": ["score", "compared within", "val perplexity"], "rows": abl}],
        anchors=["Llama-2-7B WikiText-2 perplexity (Sun et al. 2023, Wanda paper): dense 5.12; "
                 "50% unstructured: magnitude 14.89, SparseGPT 6.51, Wanda 6.42; 2:4: "
                 "magnitude 54.59, SparseGPT 10.17, Wanda 11.02."],
        notes=[f"Beats magnitude (lower perplexity): {beat}.",
               "Wanda checked against the paper: score |W_ij|*||X_j||_2 over the layer's "
               "calibration inputs, compared within each output row (within each group of m "
               "inputs of a row for N:M), inputs gathered block by block through the already "
               "pruned earlier blocks. The ablation table shows its gap to magnitude comes "
               "from the score itself: with either comparison group |W|*||X|| does no better "
               "than |W| here. The score helps where a few input features carry outsized "
               "activations (LLMs' emergent outlier features, up to ~20x the others: Dettmers "
               "et al. 2022); this character model's largest "
               f"input-norm / median ratio per layer is only {lo:.1f}..{hi:.1f}, so weighting "
               "by it does not single out the important inputs. SparseGPT's weight "
               "reconstruction is what recovers the loss.",
               f"Reference model: benchmarks/common.py trained_tiny_gpt() "
               f"({REFERENCE['tiny_gpt_shakespeare']['steps']} steps); every "
               "Linear in the 4 blocks pruned, token/position embeddings and the output head "
               "dense (as in the papers); no fine-tuning after pruning.",
               "Calibration: 128 random training windows of 128 characters, block-sequential.",
               ".mzip bytes: masks stored as bitmask / relative indices / N:M indices, values "
               "only at kept positions (fp32)."])


if __name__ == "__main__":
    main()
