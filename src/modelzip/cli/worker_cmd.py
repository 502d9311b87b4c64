"""modelzip worker: join a running `auto` or `search` study from any machine.

The study records the job that made it (see cli/jobs.py); the worker rebuilds the same
objective, runs trials until the study holds its total of finished trials (all processes
counted), and exits. With ``--out`` it then writes the final model (re-evaluated against the
budget) and prints the report, as the original command does when run again.
"""

from __future__ import annotations

import os
import random
from typing import Any

from .common import add_json
from .jobs import recorded


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="join a running auto/search study (any machine)")
    p.add_argument("--storage", required=True,
                   help="the study's storage: postgresql://..., mysql://..., "
                        "sqlite file/URL or journal:///shared/path.log")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--out", default=None,
                   help="when the study has its trials, write the final model here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (search)")
    p.add_argument("--no-progress", action="store_true")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    kind, job, trials = recorded(args.storage, args.study)
    job.storage, job.study, job.trials = args.storage, args.study, trials
    job.out, job.json, job.no_progress = args.out, args.json, args.no_progress
    write = args.out is not None
    # own sampler seed: workers started together must not propose the same first trials
    seed = random.SystemRandom().randrange(2**31 - 1) ^ os.getpid()
    if kind == "auto":
        from . import auto_cmd

        return auto_cmd.execute(job, write=write, sampler_seed=seed)
    from . import search_cmd

    job.workers = 1
    if args.threads is not None:
        job.threads = args.threads
    return search_cmd.execute(job, search_cmd.load_data(job), write=write)
