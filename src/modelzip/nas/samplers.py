"""The search strategies as Optuna samplers.

Every strategy is an Optuna sampler that derives all its state from the trials recorded
in the study (never from process memory), so a killed search resumes from the storage
and several processes or machines can share one study:

* ``random``: Optuna's RandomSampler.
* ``tpe``: Optuna's multivariate TPE (Bergstra et al. 2011), constant liar for parallel runs.
* ``evolution``: regularised (aging) evolution (Real et al. 2019): the population is the
  most recent ``population`` finished trials; a tournament of ``sample_size`` picks a
  parent (the best; with several objectives a non-dominated one), one choice is mutated.
* ``reinforce``: a factorised softmax policy over the choices (one logit vector per
  dimension) trained with REINFORCE (Williams 1992; Zoph & Le 2017) with a moving-average
  baseline. The policy is rebuilt by replaying the finished trials in trial-number order.
* ``darts``: samples from the architecture distribution that a DARTS supernet learned
  (``supernet.py``), stored in the study's user attributes; the first trial takes the
  arg-max (the discretised DARTS answer), later ones draw from softmax(alpha / temperature).

:class:`Guard` wraps any of them: it re-draws (up to ``tries`` times) samples that break a
parameter/MAC constraint or repeat an architecture already tried, before any training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler, TPESampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError
from .space import SearchSpace, sample_key

STRATEGIES = ("random", "evolution", "tpe", "darts", "reinforce")
# strategy -> option -> default
OPTIONS: dict[str, dict[str, Any]] = {
    "random": {},
    "tpe": {"n_startup_trials": 5},
    "evolution": {"population": 8, "sample_size": 3},
    "reinforce": {"lr": 0.5, "baseline_decay": 0.8},
    "darts": {"epochs": 2.0, "lr": 3e-3, "arch_lr": 3e-2, "temperature": 1.0},
}


def strategy_options(strategy: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options of ``strategy`` with defaults filled; unknown keys are ConfigErrors."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}; choose one of {STRATEGIES}")
    out = dict(OPTIONS[strategy])
    for k, v in (options or {}).items():
        if k not in out:
            raise ConfigError(f"strategy {strategy!r}: unknown option {k!r}; "
                              f"valid: {sorted(out) or 'none'}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"strategy option {k} must be a positive number, got {v!r}")
        out[k] = type(out[k])(v)
    return out


def finished(study: optuna.Study, states: tuple[TrialState, ...] = (TrialState.COMPLETE,)
             ) -> list[FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=states)
    return sorted(trials, key=lambda t: t.number)


def dominates(a: list[float], b: list[float], directions: list[StudyDirection]) -> bool:
    """Whether values ``a`` Pareto-dominate ``b``."""
    sign = [1 if d == StudyDirection.MAXIMIZE else -1 for d in directions]
    ge = all(s * x >= s * y for s, x, y in zip(sign, a, b, strict=True))
    return ge and any(s * x > s * y for s, x, y in zip(sign, a, b, strict=True))


class _SpaceSampler(BaseSampler):
    """Base of the history-driven samplers: every choice of ``space`` sampled jointly."""

    def __init__(self, space: SearchSpace, seed: int | None = None):
        self.space = space
        self.dists = {k: CategoricalDistribution(v) for k, v in space.params().items()}
        self.rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return dict(self.dists)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self.rng = np.random.RandomState()
        self._random.reseed_rng()


class EvolutionSampler(_SpaceSampler):
    """Regularised evolution: tournament selection in an aging population, one mutation."""

    def __init__(self, space: SearchSpace, seed: int | None = None, population: int = 8,
                 sample_size: int = 3):
        super().__init__(space, seed)
        self.population, self.sample_size = int(population), int(sample_size)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        done = [t for t in finished(study) if set(self.dists) <= set(t.params)]
        if len(done) < self.population:
            return {}  # random until the first population is complete
        pop = done[-self.population:]
        picks = self.rng.choice(len(pop), size=min(self.sample_size, len(pop)), replace=False)
        contenders = [pop[i] for i in picks]
        dirs = study.directions
        front = [c for c in contenders
                 if not any(dominates(o.values, c.values, dirs) for o in contenders)]
        parent = front[self.rng.randint(len(front))]
        child = {k: parent.params[k] for k in self.dists}
        mutable = [k for k, d in self.dists.items() if len(d.choices) > 1]
        if mutable:
            key = mutable[self.rng.randint(len(mutable))]
            options = [c for c in self.dists[key].choices if c != child[key]]
            child[key] = options[self.rng.randint(len(options))]
        return child


class ReinforceSampler(_SpaceSampler):
    """A factorised softmax policy trained with REINFORCE on the trials' rewards."""

    def __init__(self, space: SearchSpace, seed: int | None = None, lr: float = 0.5,
                 baseline_decay: float = 0.8):
        super().__init__(space, seed)
        self.lr, self.decay = float(lr), float(baseline_decay)

    def policy(self, study: optuna.Study) -> dict[str, np.ndarray]:
        """Replay the finished trials (in number order) through the REINFORCE update."""
        logits = {k: np.zeros(len(d.choices)) for k, d in self.dists.items()}
        history = finished(study, (TrialState.COMPLETE, TrialState.PRUNED))
        rewards = [r for r in (_reward(t) for t in history) if r is not None]
        floor = min(rewards) if rewards else 0.0
        baseline, seen = None, []
        for t in history:
            if not set(self.dists) <= set(t.params):
                continue
            r = _reward(t)
            r = floor if r is None else r  # a broken constraint earns the worst reward
            seen.append(r)
            baseline = r if baseline is None else self.decay * baseline + (1 - self.decay) * r
            scale = float(np.std(seen)) or 1.0
            adv = float(np.clip((r - baseline) / scale, -3, 3))
            for k, d in self.dists.items():
                p = _softmax(logits[k])
                grad = -p
                grad[d.choices.index(t.params[k])] += 1.0
                logits[k] += self.lr * adv * grad
        return logits

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        logits = self.policy(study)
        return {k: d.choices[self.rng.choice(len(d.choices), p=_softmax(logits[k]))]
                for k, d in self.dists.items()}


def _reward(t: FrozenTrial) -> float | None:
    """The metric of a finished trial; an early-stopped one counts its last report."""
    if t.state == TrialState.COMPLETE:
        return float(t.values[0])
    if t.intermediate_values:
        return float(t.intermediate_values[max(t.intermediate_values)])
    return None


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


class DartsSampler(_SpaceSampler):
    """Draws from the distribution a DARTS supernet learned (arg-max first)."""

    def __init__(self, space: SearchSpace, seed: int | None = None, temperature: float = 1.0,
                 **_: Any):
        super().__init__(space, seed)
        self.temperature = float(temperature)
        self._drawn_for = -1

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        probs = study.user_attrs.get("darts", {}).get("probs")
        if not probs:
            return {}
        first_draw = self._drawn_for != trial.number
        self._drawn_for = trial.number
        best = {k: self.dists[k].choices[int(np.argmax(p))] for k, p in probs.items()}
        tried = [t.params for t in study.get_trials(deepcopy=False)
                 if t.number != trial.number]
        if first_draw and not any(all(p.get(k) == v for k, v in best.items()) for p in tried):
            return best  # the discretised DARTS answer, once
        out = {}
        for k, p in probs.items():
            w = np.asarray(p, dtype=float) ** (1.0 / self.temperature)
            out[k] = self.dists[k].choices[self.rng.choice(len(w), p=w / w.sum())]
        return out


def make_sampler(strategy: str, space: SearchSpace, seed: int,
                 options: dict[str, Any]) -> BaseSampler:
    """The sampler of ``strategy`` (options already validated)."""
    if strategy == "random":
        return RandomSampler(seed=seed)
    if strategy == "tpe":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TPESampler(seed=seed, multivariate=True, constant_liar=True,
                              n_startup_trials=int(options["n_startup_trials"]))
    cls = {"evolution": EvolutionSampler, "reinforce": ReinforceSampler,
           "darts": DartsSampler}[strategy]
    kw = {k: v for k, v in options.items() if k in ("population", "sample_size", "lr",
                                                     "baseline_decay", "temperature")}
    if strategy == "darts":
        kw = {"temperature": options["temperature"]}
    return cls(space, seed, **kw)


class Guard(BaseSampler):
    """Wraps a sampler: re-draws samples that break ``ok`` or repeat an architecture."""

    def __init__(self, base: BaseSampler, space: SearchSpace,
                 ok: Callable[[dict[str, Any]], bool], tries: int = 50):
        self.base, self.space, self.ok, self.tries = base, space, ok, tries
        self.dists = {k: CategoricalDistribution(v) for k, v in space.params().items()}

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return dict(self.dists)

    def _draw(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        inner = self.base.infer_relative_search_space(study, trial)
        params = dict(self.base.sample_relative(study, trial, inner)) if inner else {}
        for k, d in self.dists.items():
            if k not in params:
                params[k] = self.base.sample_independent(study, trial, k, d)
        return params

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        seen = {sample_key(self.space.normalise(t.params))
                for t in study.get_trials(deepcopy=False)
                if t.number != trial.number and set(self.dists) <= set(t.params)}
        fallback, fallback_ok = None, False
        exhausted = len(seen) >= self.space.size()
        for _ in range(self.tries):
            params = self._draw(study, trial)
            feasible = self.ok(params)
            if feasible and (exhausted or sample_key(self.space.normalise(params)) not in seen):
                return params
            if fallback is None or (feasible and not fallback_ok):
                fallback, fallback_ok = params, feasible
        return fallback  # a repeat, or a violation that the objective will reject

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def mixed_seed(*parts: int) -> int:
    """A 31-bit seed from several integers (seed, worker, trials already in the study)."""
    h = 1469598103
    for p in parts:
        h = (h * 1000003) ^ (int(p) & 0xFFFFFFFF)
    return int(h % (2 ** 31 - 1))


__all__ = ["STRATEGIES", "Guard", "make_sampler", "strategy_options"]
