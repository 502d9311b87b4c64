"""Running on several processes and machines.

- :mod:`.storage`: Optuna storages from one string (SQLite, PostgreSQL, MySQL, journal file),
  race-free to open, with heartbeats so a killed worker's trial is failed and retried;
- :mod:`.study`: studies created safely by many processes, and ``run_until_total``, the
  trial loop that stops at a total of finished trials across every process;
- :mod:`.ddp`: data-parallel training under ``torchrun`` (DDP, exact batch sharding,
  agreed metrics, rank-0-only output) and the generic collectives (``all_reduce_sum``).
"""

from . import ddp
from .ddp import all_reduce_sum, is_distributed, is_main, rank, world_size
from .storage import StorageError, open_storage, storage_url
from .study import create_or_load_study, load_study, run_until_total

__all__ = ["ddp", "is_distributed", "rank", "world_size", "is_main", "all_reduce_sum",
           "StorageError", "open_storage", "storage_url",
           "create_or_load_study", "load_study", "run_until_total"]
