"""Issue 16 benchmark 2 at scale: a ~24M-parameter Llama-architecture model (GQA)
trained on Tiny Shakespeare (cached), then on its validation split (a) fp32 / RTN / GPTQ /
AWQ at 4 and 3 bits and (b) heads, neurons and depth pruned at 25% and 50%, perplexity
before and after a short fine-tune.

    python benchmarks/llama_shakespeare.py           # the committed run
    python benchmarks/llama_shakespeare.py --quick   # a tiny config, for a smoke test

Training runs under bf16 autocast (fp32 master weights): on this CPU (AMX) a training step
is ~2x faster than fp32. Every perplexity is computed in fp32.
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import hashlib
import json
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import CACHE, RESULTS, data_root, fmt, shakespeare, write_result

import modelzip as mz
import modelzip.io.hf  # noqa: F401  (mz.load rebuilds "hf" architectures)

LLAMA = {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8,
         "num_key_value_heads": 4, "intermediate_size": 1408}
TRAIN = {"steps": 500, "lr": 2e-3, "batch_size": 8, "seq_len": 256, "stride": 64,
         "schedule": "cosine", "autocast": "bf16"}
EVAL = {"batches": 8, "batch_size": 8}             # 8 x 8 x 256 = 16,384 characters
CALIB_BATCHES, FT = 8, {"steps": 20, "batch_size": 8, "lr": 5e-4}
QUICK = ({"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 8,
          "num_key_value_heads": 4, "intermediate_size": 176},
         {**TRAIN, "steps": 20}, {"batches": 2, "batch_size": 8}, {**FT, "steps": 3})
LOG_EVERY = 25


def build_llama(vocab: int, arch: dict[str, int], seq_len: int) -> torch.nn.Module:
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=vocab, max_position_embeddings=seq_len,
                                   tie_word_embeddings=False, **arch)
    model = transformers.LlamaForCausalLM(cfg)
    model._mz_arch = {"kind": "hf", "auto_class": "AutoModelForCausalLM",
                      "config": model.config.to_dict()}
    return model


def bf16(enabled: bool = True) -> torch.autocast:
    """bf16 autocast around a whole training run. cache_enabled=False: autocast caches the
    bf16 copy of each weight until the outermost autocast region exits, so with the cache
    every step of one run would compute with the step-0 weights (the model does not learn)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled, cache_enabled=False)


def params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def cache_name(arch: dict[str, int], train: dict[str, Any]) -> str:
    key = json.dumps({"arch": arch, "train": train}, sort_keys=True)
    return "llama_shakespeare_" + hashlib.sha1(key.encode()).hexdigest()[:10]


def trained(arch: dict[str, int], train: dict[str, Any]) -> tuple[torch.nn.Module, dict]:
    """The Llama of ``arch`` trained for ``train`` (cached in CACHE, file-locked): the model
    and its training log (loss curve, seconds), which is kept in the .mzip's info."""
    name = cache_name(arch, train)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.mzip"
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return mz.load(path).eval(), mz.read_manifest(path)["info"]["log"]
        split = shakespeare(train["seq_len"], train["batch_size"], stride=train["stride"])
        torch.manual_seed(0)
        model = build_llama(mz.data.info(split)["vocab_size"], arch, train["seq_len"])
        log = fit(model, split, train["steps"], train["lr"], autocast=True)
        log["windows"] = len(split.train.dataset)
        mz.save(model, path, entropy="none", info={"reference": name, **train, "log": log})
        return model.eval(), log


def fit(model: torch.nn.Module, split: Any, steps: int, lr: float, *,
        autocast: bool) -> dict[str, Any]:
    """``steps`` batches of mz.train (AdamW, cosine), bf16 autocast when asked; the mean
    loss of every LOG_EVERY steps and the wall time."""
    losses: list[float] = []
    t0 = time.perf_counter()

    def loss(out: Any, target: torch.Tensor) -> torch.Tensor:
        logits = out.logits.float()
        value = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
        losses.append(float(value.detach()))
        if len(losses) % LOG_EVERY == 0:
            print(f"step {len(losses)}: loss {sum(losses[-LOG_EVERY:]) / LOG_EVERY:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return value

    with bf16(autocast):
        mz.train(model, split.train, epochs=steps / len(split.train), lr=lr, loss=loss,
                 progress=False)
    curve = [round(sum(losses[i:i + LOG_EVERY]) / len(losses[i:i + LOG_EVERY]), 4)
             for i in range(0, len(losses), LOG_EVERY)]
    return {"seconds": round(time.perf_counter() - t0, 1), "steps": len(losses),
            "loss_every": LOG_EVERY, "curve": curve}


def ngram_ppl(x: torch.Tensor, y: torch.Tensor, info: dict[str, Any]) -> tuple[float, float]:
    """Unigram and bigram (add-one) perplexity of the targets ``y`` (inputs ``x``) with
    counts from the training 90% of the corpus: what a model that learnt only letter
    frequencies, or only which letter follows which, would score."""
    text = (data_root() / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    lut = {c: i for i, c in enumerate(info["vocab"])}
    seq = torch.tensor([lut[c] for c in text[:int(len(text) * 0.9)]])  # mz.data.text's cut
    v = info["vocab_size"]
    uni = torch.bincount(seq, minlength=v).double() + 1
    bi = torch.ones(v, v, dtype=torch.double)
    bi.index_put_((seq[:-1], seq[1:]), torch.ones(len(seq) - 1, dtype=torch.double),
                  accumulate=True)
    p_uni = (uni / uni.sum())[y.reshape(-1)]
    p_bi = (bi / bi.sum(1, keepdim=True))[x.reshape(-1), y.reshape(-1)]
    return math.exp(-p_uni.log().mean().item()), math.exp(-p_bi.log().mean().item())


def ppl_of(ev: dict[str, int]) -> Any:
    def ppl(m: torch.nn.Module, split: Any) -> float:
        return mz.perplexity(m, split.test, max_batches=ev["batches"])
    return ppl


def quant_rows(base: torch.nn.Module, split: Any, calib: list, ppl: Any,
               tmp: Path) -> tuple[list[list], dict]:
    """(a): fp32 and 4/3-bit RTN, GPTQ, AWQ of the blocks' Linear layers; the bytes of
    each saved .mzip. The 4-bit GPTQ file is loaded back and evaluated again."""
    def saved(m: torch.nn.Module, tag: str) -> tuple[Path, int]:
        path = tmp / f"{tag}.mzip"
        mz.save(m, path)
        return path, path.stat().st_size

    fp32 = ppl(base, split)
    _, size = saved(base, "fp32")
    rows, out = [["fp32", "-", fmt(fp32, 3), "-", size]], {"fp32": fp32}
    for bits in (4, 3):
        for method in ("rtn", "gptq", "awq"):
            m = copy.deepcopy(base)
            t0 = time.perf_counter()
            mz.quantize(m, mz.WeightOnly(bits=bits, group_size=128, method=method,
                                         targets=["re:model\\.layers\\..*_proj"]),
                        calib_data=calib if method != "rtn" else None)
            sec = time.perf_counter() - t0
            out[f"{bits}-{method}"] = p = ppl(m, split)
            path, size = saved(m, f"{bits}-{method}")
            rows.append([f"{bits}-bit", method.upper(), fmt(p, 3), fmt(sec, 1), size])
            if (bits, method) == (4, "gptq"):
                out["reloaded 4-gptq"] = ppl(mz.load(path), split)
            print(rows[-1], flush=True)
    return rows, out


def prune_configs(with_l1: bool) -> list[tuple[str, float, str, Any]]:
    out = []
    for crit in ("activation", "l1") if with_l1 else ("activation",):
        for ratio in (0.25, 0.5):
            out.append(("heads", ratio, crit, mz.Heads(ratio, criterion=crit)))
            out.append(("neurons", ratio, crit, mz.Neurons(ratio, criterion=crit)))
        if crit == "activation":
            out += [("depth", r, "angular", mz.Depth(ratio=r)) for r in (0.25, 0.5)]
    return out


def prune_rows(base: torch.nn.Module, split: Any, calib: list, ppl: Any, ft: dict,
               with_l1: bool, done: Any) -> list[list]:
    """(b): each structure pruned, perplexity before and after ``ft`` fine-tune steps
    (bf16 autocast); the unpruned model fine-tuned alike is the control row."""
    def tune(m: torch.nn.Module) -> float:
        with bf16():
            mz.finetune(m, split.train, epochs=ft["steps"] / len(split.train), lr=ft["lr"],
                        progress=False)
        return ppl(m, split)

    base_ppl = ppl(base, split)
    rows = [["none", "-", "-", params(base), fmt(base_ppl, 3),
             fmt(tune(copy.deepcopy(base)), 3)]]
    done(rows)
    for kind, ratio, crit, cfg in prune_configs(with_l1):
        m = copy.deepcopy(base)
        mz.prune(m, cfg, calib_data=calib)
        before = ppl(m, split)
        rows.append([kind, ratio, crit, params(m), fmt(before, 3), fmt(tune(m), 3)])
        print(rows[-1], flush=True)
        done(rows)
    return rows



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny config: a smoke test")
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--no-l1", action="store_true", help="activation criterion only")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(torch.get_num_threads())
    arch, train, ev, ft = QUICK if args.quick else (LLAMA, TRAIN, EVAL, FT)
    model, log = trained(arch, train)
    print(f"{params(model)} parameters; training {log['seconds']} s", flush=True)
    if args.train_only:
        return
    split = shakespeare(train["seq_len"], ev["batch_size"], stride=train["stride"])
    calib = [b[0] for _, b in zip(range(CALIB_BATCHES), split.train, strict=False)]
    ppl = ppl_of(ev)
    x, y = zip(*[b for _, b in zip(range(ev["batches"]), split.test, strict=False)],
               strict=True)
    ctx = {"arch": arch, "train": train, "eval": ev, "ft": ft, "log": log,
           "params": params(model), "vocab": mz.data.info(split)["vocab_size"],
           "tokens": torch.cat(y).numel(),
           "ngram": ngram_ppl(torch.cat(x), torch.cat(y), mz.data.info(split)),
           "name": "llama_shakespeare" + ("_quick" if args.quick else ""), "t0": time.time()}
    with tempfile.TemporaryDirectory() as tmp:
        qrows, q = quant_rows(model, split, calib, ppl, Path(tmp))
    ctx["quant_s"] = time.time() - ctx["t0"]
    ctx["n_configs"] = len(prune_configs(not args.no_l1))
    report(ctx, qrows, q, [])
    prune_rows(model, split, calib, ppl, ft, not args.no_l1,
               lambda rows: report(ctx, qrows, q, rows))





def prior(name: str) -> list[list]:
    """The first table's rows of another benchmark's committed result (for the anchors)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text())["tables"][0]["rows"] if path.exists() else []


def quant_verdicts(q: dict[str, float]) -> list[str]:
    def vs(b: int, m: str) -> str:
        word = "beats" if q[f"{b}-{m}"] < q[f"{b}-rtn"] else "does NOT beat"
        return f"{m.upper()} {q[f'{b}-{m}']:.3f} {word} RTN {q[f'{b}-rtn']:.3f}"

    out = [f"{b}-bit: {vs(b, 'gptq')}; {vs(b, 'awq')} (fp32 {q['fp32']:.3f})" for b in (4, 3)]
    tg = {(r[0], r[1]): r[2] for r in prior("quant_tiny_gpt")}
    if tg:
        out.append("Same protocol on tiny_gpt (quant_tiny_gpt.json, 0.2M parameters): "
                   + "; ".join(f"{b}-bit RTN {tg[f'{b}-bit', 'RTN']}, GPTQ "
                               f"{tg[f'{b}-bit', 'GPTQ']}, AWQ {tg[f'{b}-bit', 'AWQ']}"
                               for b in (4, 3)) + f" (fp32 {tg['fp32', '-']}).")
    if "reloaded 4-gptq" in q:
        out.append(f"The 4-bit GPTQ .mzip loaded back with mz.load (integer codes) scores "
                   f"{q['reloaded 4-gptq']:.3f} (in memory {q['4-gptq']:.3f}).")
    return out


def prune_verdicts(rows: list[list]) -> list[str]:
    got = {(r[0], r[1], r[2]): r for r in rows}
    out = []
    for ratio in (0.25, 0.5):
        for kind in ("heads", "neurons"):
            a, b = got.get((kind, ratio, "activation")), got.get((kind, ratio, "l1"))
            if a and b:
                word = "lower" if a[4] < b[4] else "NOT lower"
                out.append(f"{kind} {ratio:.0%}: activation {a[4]} is {word} than l1 {b[4]} "
                           f"before fine-tune ({a[5]} vs {b[5]} after)")
    return out


def report(ctx: dict[str, Any], qrows: list[list], q: dict, prows: list[list]) -> None:
    arch, train, ev, ft, log = ctx["arch"], ctx["train"], ctx["eval"], ctx["ft"], ctx["log"]
    uni, bi = ctx["ngram"]
    tables = [
        {"title": "the model: transformers.LlamaForCausalLM, character vocabulary",
         "columns": ["parameters", "train steps", "train s", "first loss", "last loss",
                     "val perplexity fp32", "unigram ppl", "bigram ppl"],
         "rows": [[ctx["params"], log["steps"], log["seconds"], log["curve"][0],
                   log["curve"][-1], fmt(q["fp32"], 3), fmt(uni, 3), fmt(bi, 3)]]},
        {"title": "(a) weight-only PTQ, symmetric, group 128, Linear layers of model.layers "
                  f"(embeddings, lm_head fp32); calibration {CALIB_BATCHES} training batches "
                  f"of {ev['batch_size']} x {train['seq_len']}",
         "columns": ["weights", "method", "val perplexity", "quantize s", "file bytes"],
         "rows": qrows}]
    if prows:
        tables.append(
            {"title": f"(b) structured pruning; fine-tune = {ft['steps']} steps of batch "
                      f"{ft['batch_size']} x {train['seq_len']} at lr {ft['lr']} (AdamW, "
                      "cosine, bf16 autocast)",
             "columns": ["pruned", "ratio", "criterion", "parameters", "val perplexity",
                         "after fine-tune"],
             "rows": prows})
    pt = [r for r in prior("prune_transformer") if r[0] == "llama (GQA)"]
    write_result(
        ctx["name"], "Llama (~24M parameters, GQA) on Tiny Shakespeare: 4/3-bit "
        "RTN/GPTQ/AWQ; heads/neurons/depth pruning", tables,
        anchors=["GPTQ paper (Frantar et al. 2023), OPT-125M 4-bit WikiText2 perplexity: "
                 "fp16 27.65, RTN 37.28, GPTQ 31.12.",
                 "Gromov et al. 2024: dropping the most similar run of blocks keeps quality "
                 "to ~40-50% of Llama-2-70B's layers with a short heal.",
                 "FLAP / Wanda-sp (An et al. 2024): activation-aware structured scores beat "
                 "weight magnitude for LLM heads and channels."],
        notes=quant_verdicts(q) + prune_verdicts(prows) + [
            f"Architecture {arch}, tie_word_embeddings=False, vocabulary "
            f"{ctx['vocab']} characters: {ctx['params']:,} parameters.",
            f"Training (cached in CACHE as {cache_name(arch, train)}.mzip): {train['steps']} "
            f"steps of batch {train['batch_size']} x {train['seq_len']} characters (windows "
            f"at stride {train['stride']} over the first 90% of the corpus, "
            f"{log['windows']} windows, shuffled) at lr {train['lr']} (mz.train: AdamW, "
            f"cosine, no warm-up) under bf16 autocast with fp32 weights: {log['seconds']} s "
            f"on 2 shared cores. Mean loss per {log['loss_every']} steps: {log['curve']}.",
            f"Validation: the first {ev['batches']} batches of {ev['batch_size']} x "
            f"{train['seq_len']} of the last 10% of the corpus = {ctx['tokens']} "
            "characters, fp32. Unigram / bigram: add-one counts from the training 90%.",
            "Heads are pruned as whole KV groups (gqa='groups'): 25% removes 1 of 4 groups "
            "(2 query heads) per block. Depth removes the contiguous run of blocks with "
            "the smallest angular distance. The 'none' row's 'after fine-tune' is the "
            "unpruned model fine-tuned alike: the control for an undertrained model.",
            f"Pruning rows run: {max(len(prows) - 1, 0)} of {ctx['n_configs']} configurations "
            "(activation criterion and depth first, then l1).",
            f"Quantization part took {ctx['quant_s']:.0f} s; the whole evaluation "
            f"{time.time() - ctx['t0']:.0f} s (after the cached training).",
            "The 190K-parameter Llama of prune_transformer.json, for comparison: "
            + "; ".join(f"{r[1]} {r[2]} {r[3]}: {r[5]} -> {r[6]}" for r in pt[1:])
            + (f" (unpruned {pt[0][5]})." if pt else "")],
        extra={"train": train, "arch": arch, "eval": ev, "finetune": ft,
               "training_log": log}, script="llama_shakespeare")


if __name__ == "__main__":
    main()
