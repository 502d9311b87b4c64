"""Conformance cases of the foundation methods: Magnitude, WeightOnly RTN."""

import modelzip as mz

from .cases import Case

CASES = [
    Case("magnitude-layer", lambda **k: mz.Magnitude(**{"sparsity": 0.8, **k}), mz.prune,
         invalid=[{"sparsity": 1.5}, {"sparsity": -0.1}, {"scope": "row"}]),
    Case("magnitude-global", lambda **k: mz.Magnitude(**{"sparsity": 0.9, "scope": "global",
                                                          **k}), mz.prune,
         invalid=[{"sparsity": "a lot"}]),
    Case("weightonly-rtn8", lambda **k: mz.WeightOnly(**{"bits": 8, "group_size": None, **k}),
         mz.quantize, invalid=[{"bits": 0}, {"bits": 9}, {"group_size": 0},
                               {"method": "magic"}]),
    Case("weightonly-rtn4-g32", lambda **k: mz.WeightOnly(**{"bits": 4, "group_size": 32, **k}),
         mz.quantize, invalid=[{"bits": 2.5}]),
]
