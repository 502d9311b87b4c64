"""Neural architecture search: search spaces as data, five strategies sharing one Optuna
trial interface, constraints, Pareto fronts, resumable and parallel trials.

    space = mz.nas.space("mlp", split)          # or a YAML file / dict
    result = mz.search_architecture(space, evaluate=mz.nas.accuracy_on(val),
                                    train_data=train, trials=20, strategy="evolution",
                                    constraints={"params": 20_000}, storage="sqlite:///s.db")
    result.model, result.metrics, result.history, result.pareto

See docs/nas.md.
"""

from .builder import build
from .samplers import STRATEGIES
from .search import (
    SearchResult,
    accuracy_on,
    arch_stats,
    example_inputs,
    holdout,
    neg_perplexity_on,
    open_storage,
    pareto_front,
    search_architecture,
)
from .space import ACTIVATIONS, FAMILIES, SearchSpace, space
from .supernet import train_supernet

__all__ = ["SearchSpace", "space", "build", "search_architecture", "SearchResult",
           "accuracy_on", "neg_perplexity_on", "holdout", "arch_stats", "example_inputs",
           "pareto_front", "open_storage", "train_supernet", "STRATEGIES", "FAMILIES",
           "ACTIVATIONS"]
