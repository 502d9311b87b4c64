"""NAS acceptance 3: two worker processes against one SQLite study versus one worker,
same number of trials: wall time should be close to half.

Random strategy over a one-architecture space (equal trial costs), a Fashion-MNIST slice,
each trial trains 3 epochs with 1 torch thread per worker. Wall time is the search
only (no retraining), measured from the call to its return, including the start-up of
the spawned worker process. Timings are medians of repeats, run alternately.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import torch
from common import fashion, fmt, write_result

import modelzip as mz

TRIALS = 12
REPEATS = 3
EPOCHS = 3  # about 2.6 s per trial: short next to real searches, long next to start-up
TRAIN_LIMIT = 60_000  # all of Fashion-MNIST's training images: trials of a few seconds


def search(workers: int, train, val, space, tmp: str, tag: str) -> float:
    url = f"sqlite:///{tmp}/{tag}.db"
    t0 = time.perf_counter()
    r = mz.search_architecture(space, evaluate=mz.nas.accuracy_on(val), train_data=train,
                               trials=TRIALS, strategy="random", epochs=EPOCHS, lr=2e-3,
                               storage=url, study=tag, workers=workers, threads=1, pruner="none",
                               retrain_epochs=0, progress=False)
    wall = time.perf_counter() - t0
    assert r.metrics["trials"] == TRIALS
    return wall


def main() -> None:
    torch.set_num_threads(1)
    split = fashion(train_limit=TRAIN_LIMIT)
    train, val = mz.nas.holdout(split.train, 1 / 6)
    # one architecture (784-128-128-10): every trial costs the same, so the timing compares
    # the parallel machinery rather than the luck of which architectures were drawn;
    # no pruner, so that no trial is stopped early
    space = mz.nas.space("mlp", split, depth=[2], width=[128], activation=["relu"])
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(REPEATS):
            for workers in (1, 2):
                times[workers].append(search(workers, train, val, space, tmp,
                                             f"w{workers}r{rep}"))
                print(workers, times[workers][-1])
    one, two = statistics.median(times[1]), statistics.median(times[2])
    write_result(
        "nas_workers", "NAS: two worker processes on one SQLite study",
        [{"title": f"{TRIALS} trials, random strategy, {EPOCHS} epochs per trial, "
                   f"median of {REPEATS}",
          "columns": ["workers", "wall time s (median)", "all runs s", "time / 1 worker"],
          "rows": [[1, fmt(one, 1), [fmt(t, 1) for t in times[1]], 1.0],
                   [2, fmt(two, 1), [fmt(t, 1) for t in times[2]], fmt(two / one, 3)]]}],
        anchors=["Issue 8 acceptance 3: two worker processes against one study: wall time "
                 "close to half of one worker's for the same number of trials."],
        notes=[f"Fashion-MNIST: {TRAIN_LIMIT:,} training images "
               f"({len(train.dataset):,} train / {len(val.dataset):,} validation).",
               f"Machine: {os.cpu_count()} cores, nothing else running; 1 torch thread per "
               "worker. The 2-worker time includes spawning the second process (importing "
               "torch and reading the pickled job, about 1.7 s) and its first, slower trial. "
               "Every trial trains the same architecture (784-128-128-10) so that "
               "trial costs are equal.",
               f"Ratio measured: {two / one:.2f} (ideal 0.5)."])


if __name__ == "__main__":
    main()
