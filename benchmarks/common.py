"""Shared by every benchmark: the machine description and the results JSON.

Each benchmark script writes ``benchmarks/results/<name>.json`` through
:func:`write_result`; ``run_all.py`` renders all of them into ``RESULTS.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version()}


def data_root() -> Path | None:
    """Folder with fashion-mnist/ and tinyshakespeare/ ($MODELZIP_DATA or ../shared)."""
    for cand in (os.environ.get("MODELZIP_DATA"), REPO.parent / "shared" / "datasets"):
        if cand and (Path(cand) / "fashion-mnist").is_dir():
            return Path(cand)
    return None


def write_result(name: str, title: str, tables: list[dict[str, Any]], *,
                 anchors: list[str] | None = None, notes: list[str] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write one benchmark's figures.

    ``tables``: ``[{"title": str, "columns": [str], "rows": [[value, ...]]}]``.
    ``anchors``: the published figures the issue names, as sentences with sources.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "title": title,
               "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "tables": tables, "anchors": anchors or [],
               "notes": notes or [], **(extra or {})}
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
    return path


def fmt(v: Any, digits: int = 4) -> Any:
    """Round floats for tables."""
    return round(v, digits) if isinstance(v, float) else v
