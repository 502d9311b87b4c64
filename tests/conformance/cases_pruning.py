"""Conformance cases of the pruning methods: N:M, Wanda, SparseGPT, Structured."""

import modelzip as mz

from .cases import Case, mlp_calib

CASES = [
    Case("nm-2of4", lambda **k: mz.NM(**{"n": 2, "m": 4, **k}), mz.prune,
         invalid=[{"n": 4}, {"m": 1}, {"n": 0}, {"m": 32}, {"n": 1.5}]),
    Case("nm-4of8", lambda **k: mz.NM(**{"n": 4, "m": 8, **k}), mz.prune),
    Case("wanda-50", lambda **k: mz.Wanda(**{"sparsity": 0.5, **k}), mz.prune, calib=mlp_calib,
         invalid=[{"sparsity": 1.0}, {"n": 2}, {"n": 2, "m": 2}, {"max_batches": 0},
                  {"group": "column"}, {"n": 2, "m": 4, "group": "layer"}]),
    Case("wanda-50-layer", lambda **k: mz.Wanda(**{"sparsity": 0.5, "group": "layer", **k}),
         mz.prune, calib=mlp_calib),
    Case("wanda-2of4", lambda **k: mz.Wanda(**{"n": 2, "m": 4, **k}), mz.prune,
         calib=mlp_calib),
    Case("sparsegpt-50", lambda **k: mz.SparseGPT(**{"sparsity": 0.5, **k}), mz.prune,
         calib=mlp_calib, invalid=[{"sparsity": -0.5}, {"blocksize": 0}, {"percdamp": 2.0},
                                   {"m": 4}]),
    Case("sparsegpt-2of4", lambda **k: mz.SparseGPT(**{"n": 2, "m": 4, **k}), mz.prune,
         calib=mlp_calib),
    Case("structured-50", lambda **k: mz.Structured(**{"ratio": 0.5, **k}), mz.prune,
         calib=mlp_calib, invalid=[{"ratio": 1.0}, {"criterion": "l3"},
                                   {"on_unsupported": "ignore"}, {"max_batches": 0}]),
    Case("structured-taylor", lambda **k: mz.Structured(**{"ratio": 0.3, "criterion": "taylor",
                                                           **k}), mz.prune, calib=mlp_calib),
]
