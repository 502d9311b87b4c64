"""Conformance cases of transformer structured pruning (Heads, Neurons) on a tiny Hugging
Face Llama with grouped KV heads, built from a config (blocks 'model.layers.0' .. '.3').

Depth is not in the suite: the suite reloads every file into a fresh, unpruned model as
well, which cannot hold blocks that were removed; ``mz.load(path)`` rebuilds a
depth-pruned model from its updated config instead (tests/test_transformer_pruning.py).
"""

import torch

import modelzip as mz
import modelzip.io.hf  # noqa: F401  (mz.load rebuilds "hf" architectures)

from .cases import Case


def llama():
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, max_position_embeddings=16)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model._mz_arch = {"kind": "hf", "auto_class": "AutoModelForCausalLM",
                      "config": model.config.to_dict()}
    return model


def ids():
    return torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(1))


def calib():
    g = torch.Generator().manual_seed(2)
    return [torch.randint(0, 40, (2, 10), generator=g) for _ in range(3)]


def _case(name, make, invalid=()):
    return Case(name, make, mz.prune, invalid=list(invalid), model=llama, inputs=ids,
                calib=calib, first="model.layers.0", middle="model.layers.1")


CASES = [
    _case("heads-50", lambda **k: mz.Heads(**{"ratio": 0.5, **k}),
          invalid=[{"ratio": 1.0}, {"criterion": "taylor"}, {"gqa": "kv"},
                   {"max_batches": 0}]),
    _case("heads-activation", lambda **k: mz.Heads(**{"ratio": 0.5, "criterion": "activation",
                                                      **k})),
    _case("neurons-50", lambda **k: mz.Neurons(**{"ratio": 0.5, **k}),
          invalid=[{"ratio": -0.1}, {"criterion": "l3"}]),
    _case("neurons-activation", lambda **k: mz.Neurons(**{"ratio": 0.5,
                                                          "criterion": "activation", **k})),
]
