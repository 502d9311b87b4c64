"""Conformance cases of weight clustering (issue 5)."""

import modelzip as mz

from .cases import Case

CASES = [
    Case("cluster-linear16", lambda **k: mz.Cluster(**{"clusters": 16, **k}), mz.cluster,
         invalid=[{"clusters": 1}, {"clusters": 2.5}, {"clusters": 1 << 17},
                  {"init": "random"}]),
    Case("cluster-kmeanspp4", lambda **k: mz.Cluster(**{"clusters": 4, "init": "kmeans++",
                                                        **k}), mz.cluster,
         invalid=[{"clusters": "many"}]),
]
