"""Neural architecture search: search spaces as data, five strategies sharing one Optuna
trial interface, constraints, Pareto fronts, resumable and parallel trials.

    space = mz.nas.space("mlp", split)          # or a YAML file / dict
    result = mz.search_architecture(space, evaluate=mz.nas.accuracy_on(val),
                                    train_data=train, trials=20, strategy="evolution",
                                    storage="sqlite:///s.db",
                                    options=mz.nas.SearchOptions(constraints={"params": 20_000}))
    result.model, result.metrics, result.history, result.pareto

See docs/nas.md.
"""

from .builder import build
from .evaluators import accuracy_on, arch_stats, example_inputs, holdout, neg_perplexity_on
from .options import SearchOptions
from .samplers import STRATEGIES
from .search import SearchResult, pareto_front, search_architecture
from .space import ACTIVATIONS, FAMILIES, SearchSpace, space
from .supernet import train_supernet
from .workers import open_storage

__all__ = ["SearchSpace", "space", "build", "search_architecture", "SearchResult",
           "SearchOptions", "accuracy_on", "neg_perplexity_on", "holdout", "arch_stats",
           "example_inputs", "pareto_front", "open_storage", "train_supernet", "STRATEGIES",
           "FAMILIES", "ACTIVATIONS"]
