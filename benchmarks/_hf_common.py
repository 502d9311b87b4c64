"""Shared by the Hugging Face export benchmarks: small Llama / GPT-2 models built from
configs and trained briefly on Tiny Shakespeare (cached), perplexity through transformers."""

from __future__ import annotations

import math
from typing import Any

import torch
from common import _cached, shakespeare

import modelzip as mz

STEPS, BATCH, SEQ, LR = 120, 8, 128, 3e-3


def llama_cfg(vocab: int, hidden: int = 128, layers: int = 4, inter: int = 352,
              heads: int = 4, kv: int = 2) -> Any:
    import transformers as tf

    return tf.LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=kv, vocab_size=vocab,
                          max_position_embeddings=SEQ, bos_token_id=0, eos_token_id=0)


def gpt2_cfg(vocab: int) -> Any:
    import transformers as tf

    return tf.GPT2Config(n_embd=128, n_layer=4, n_head=4, vocab_size=vocab, n_positions=SEQ,
                         bos_token_id=0, eos_token_id=0)


def _train(model: torch.nn.Module, split: Any) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    step = 0
    while step < STEPS:
        for x, y in split.train:
            loss = torch.nn.functional.cross_entropy(
                model(input_ids=x).logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= STEPS:
                break
    model.eval()


def trained(kind: str) -> tuple[torch.nn.Module, Any]:
    """(model, split): a char-level Llama or GPT-2 trained STEPS steps (cached)."""
    import transformers as tf

    split = shakespeare(SEQ, BATCH, stride=16)
    vocab = mz.data.info(split)["vocab_size"]
    cfg = llama_cfg(vocab) if kind == "llama" else gpt2_cfg(vocab)
    cls = tf.LlamaForCausalLM if kind == "llama" else tf.GPT2LMHeadModel
    budget = {"steps": STEPS, "batch_size": BATCH, "seq_len": SEQ, "lr": LR}
    model = _cached(f"hf_{kind}_shakespeare", lambda: cls(cfg).eval(),
                    lambda m: _train(m, split), budget)
    return model.eval(), split


def val_batch(split: Any, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for x, y in split.test:
        xs.append(x)
        ys.append(y)
        if sum(len(t) for t in xs) >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def perplexity(logits: torch.Tensor, y: torch.Tensor) -> float:
    return math.exp(float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())))


def transformers_logits(folder: Any, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``folder`` loaded by transformers in a fresh process (clean load report)."""
    from modelzip.export.hf_verify import check_report, load_in_transformers

    res = load_in_transformers([(folder, {"input_ids": x})])[0]
    check_report(res.get("report", {}))
    if "error" in res:
        raise RuntimeError(res["error"])
    return res["out"]
