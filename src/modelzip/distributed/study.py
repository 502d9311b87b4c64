"""Studies shared by many processes: race-free creation, a record of the job that made
them, and a trial loop that stops at a total of finished trials.

``run_until_total(study, n, objective)`` runs trials until the study holds ``n`` FINISHED
(complete or pruned) trials counted across every process and machine, so re-running a
command or adding workers never overshoots. Each trial first takes its rank among the
live trials (complete, pruned, running, waiting) numbered before it; a trial ranked past
``n`` (several processes started one at once) is marked FAIL with the user attribute
``surplus`` and dropped. A process whose budget is taken by RUNNING trials of others waits
for them: if their worker dies, the heartbeat fails the trial and Optuna re-queues it as a
WAITING trial, which the next free process runs. Relational storages use Optuna's own
heartbeat; storages without one (the journal) get the same from a thread here that stamps
the running trial every few seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import ConfigError
from .storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, MAX_RETRY, StorageError, masked, retrying

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS = "surplus"
BEAT = "mz_heartbeat"  # system attribute of our own heartbeat (storages without one)


class Surplus(Exception):
    """Raised inside a trial that started after the total was already taken."""


def _where(storage: Any) -> str:
    return masked(str(getattr(storage, "url", type(storage).__name__)))


def create_or_load_study(storage: Any, name: str, *, directions: Iterable[str],
                         sampler: Any = None, pruner: Any = None,
                         attrs: dict[str, Any] | None = None) -> optuna.Study:
    """Create study ``name`` in ``storage`` or load it if it exists (safe when many processes
    start at once). ``attrs`` (JSON values) are recorded as user attributes on creation and
    must match on load, so a study is never continued by a different job."""
    dirs = [d.lower() for d in directions]

    def make() -> optuna.Study:
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created"
        try:
            return optuna.create_study(storage=storage, study_name=name, directions=dirs,
                                       sampler=sampler, pruner=pruner, load_if_exists=True)
        finally:
            optuna.logging.set_verbosity(level)

    study = retrying(make, f"create study {name!r} in", _where(storage))
    have = [d.name.lower() for d in study.directions]
    if have != dirs:
        raise ConfigError(f"study {name!r} optimises {have}, this job {dirs}: "
                          "use a new study name")
    for key, value in (attrs or {}).items():
        recorded = study.user_attrs.get(key)
        if recorded is None:
            retrying(lambda k=key, v=value: study.set_user_attr(k, v), "write to",
                     _where(storage))
        elif recorded != value:
            raise ConfigError(f"study {name!r} was created by another job ({key} differs): "
                              "use a new study name")
    return study


def load_study(storage: Any, name: str) -> optuna.Study:
    """Load an existing study; a missing one is a StorageError listing those present."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        raise StorageError(f"no study {name!r} in {_where(storage)}; studies there: "
                           f"{', '.join(names) or 'none'}") from None


def count(study: optuna.Study, states: tuple[TrialState, ...] = FINISHED) -> int:
    """How many trials of ``study`` are in ``states`` (default: finished)."""
    return len(study.get_trials(deepcopy=False, states=states))


def has_heartbeat(study: optuna.Study) -> bool:
    """Whether the study's storage runs Optuna's own heartbeat (relational storages)."""
    storage = study._storage  # Optuna's own fail_stale_trials reads it the same way
    interval = getattr(storage, "get_heartbeat_interval", None)  # optuna's BaseHeartbeat
    return callable(interval) and interval() is not None


def beat_orphans(study: optuna.Study, given: set[int]) -> None:
    """Record one heartbeat for each RUNNING trial not seen before. Optuna never fails a
    running trial that has no heartbeat at all (a worker killed between creating its trial
    and the first beat leaves one that would hold the budget forever); with one beat, a dead
    trial goes stale after the grace period, while a live worker keeps refreshing its own."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number not in given:
            storage.record_heartbeat(t._trial_id)
            given.add(t.number)


def fail_dead_trials(study: optuna.Study, grace: float = GRACE_PERIOD,
                     max_retry: int = MAX_RETRY, given: set[int] | None = None) -> int:
    """Fail RUNNING trials whose worker stopped beating and re-queue them; returns how many.

    Uses Optuna's heartbeat where the storage has one (``given``: trials this process has
    already stamped once, see :func:`beat_orphans`), else our ``mz_heartbeat`` stamps."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if has_heartbeat(study):
            if given is not None:
                beat_orphans(study, given)
            before = count(study, (TrialState.FAIL,))
            optuna.storages.fail_stale_trials(study)
            return count(study, (TrialState.FAIL,)) - before
        storage, now, failed = study._storage, time.time(), 0
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback",
                        optuna.storages.RetryFailedTrialCallback)(max_retry=max_retry)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            last = t.system_attrs.get(BEAT) or (t.datetime_start.timestamp()
                                               if t.datetime_start else now)
            if now - float(last) <= grace:
                continue
            try:
                if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    failed += 1
                    retry(study, storage.get_trial(t._trial_id))
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another process failed it first
        return failed


@contextmanager
def _beating(trial: optuna.Trial, interval: float) -> Iterator[None]:
    """Stamp ``trial`` with the time every ``interval`` s while the body runs."""
    storage, trial_id, stop = trial.study._storage, trial._trial_id, threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.set_trial_system_attr(trial_id, BEAT, time.time())
            except Exception:  # the trial finished meanwhile: nothing left to stamp
                return
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True, name="modelzip-heartbeat")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def rank(trial: optuna.Trial) -> int:
    """How many live trials were numbered before ``trial`` (its place in the budget)."""
    return sum(t.number < trial.number
               for t in trial.study.get_trials(deepcopy=False, states=LIVE))


def budgeted(objective: Callable[[optuna.Trial], Any], n_total: int,
             heartbeat: float | None = None) -> Callable[[optuna.Trial], Any]:
    """``objective`` refusing trials ranked past ``n_total`` (raises Surplus after marking
    them), optionally beating our own heartbeat every ``heartbeat`` seconds."""

    def run(trial: optuna.Trial) -> Any:
        if rank(trial) >= n_total:
            trial.set_user_attr(SURPLUS, True)
            raise Surplus(f"trial {trial.number} is past the total of {n_total}")
        with _beating(trial, heartbeat) if heartbeat else nullcontext():
            return objective(trial)

    return run


def run_until_total(study: optuna.Study, n_total: int, objective: Callable[[optuna.Trial], Any],
                    *, wait: bool = True, poll: float = 0.5, grace: float | None = None,
                    catch: tuple[type[Exception], ...] = (),
                    on_progress: Callable[[int], None] | None = None) -> int:
    """Run trials of ``objective`` until ``study`` has ``n_total`` finished trials in all.

    With ``wait`` (default) a process whose remaining budget is held by other processes'
    RUNNING trials waits for them (and re-runs any that died), so it returns only when the
    total is reached; without, it returns as soon as it has nothing to start. ``grace``
    (seconds) applies to our own heartbeat (storages without Optuna's). Returns the number
    of finished trials.
    """
    if isinstance(n_total, bool) or not isinstance(n_total, int) or n_total < 1:
        raise ConfigError(f"the total of trials must be a positive integer, got {n_total!r}")
    own = not has_heartbeat(study)
    grace = GRACE_PERIOD if grace is None else grace
    run = budgeted(objective, n_total, HEARTBEAT_INTERVAL if own else None)
    given: set[int] = set()
    while True:
        fail_dead_trials(study, grace, given=given)
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        if on_progress is not None:
            on_progress(done)
        if done >= n_total:
            return done
        waiting = any(t.state == TrialState.WAITING for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if not waiting and done + running >= n_total:
            if not wait:
                return done
            time.sleep(poll)
            continue
        try:
            study.optimize(run, n_trials=1, catch=catch, gc_after_trial=False)
        except Surplus:
            continue


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The finished (complete or pruned) trials, by number, without surplus ones."""
    return sorted((t for t in study.get_trials(deepcopy=False, states=FINISHED)
                   if not t.user_attrs.get(SURPLUS)), key=lambda t: t.number)


__all__ = ["create_or_load_study", "load_study", "run_until_total", "budgeted", "rank",
           "fail_dead_trials", "finished_trials", "count", "has_heartbeat", "Surplus",
           "SURPLUS", "FINISHED"]
