"""Run times of the README's command-line examples on Fashion-MNIST (issue 13: "give run
times of the Fashion-MNIST examples").

Runs the ```bash block of README.md that starts with ``modelzip demo --dataset
fashion-mnist`` exactly as written (one fresh ``python -m modelzip`` per line, in one
temporary folder, later commands using earlier files), with MODELZIP_DATA pointing at the
bundled datasets and progress bars off; records each command's wall time, exit code and
its last output line. The README quotes these times.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from common import REPO, data_root, write_result

README = REPO / "README.md"


def commands() -> list[str]:
    """The CLI example block: its lines joined over trailing backslashes."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    block = next(b for b in blocks if "modelzip demo --dataset fashion-mnist" in b)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("#")[0].strip() for line in joined.splitlines()
            if line.strip().startswith("modelzip ")]


def main() -> None:
    root = data_root()
    if root is None:
        raise SystemExit("Fashion-MNIST not found: set MODELZIP_DATA")
    env = {**os.environ, "MODELZIP_DATA": str(root), "MODELZIP_NO_PROGRESS": "1",
           "PYTHONPATH": str(REPO / "src")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for line in commands():
            argv = shlex.split(line)
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "modelzip", *argv[1:]], cwd=tmp,
                                 env=env, capture_output=True, text=True, timeout=7200)
            wall = time.perf_counter() - t0
            tail = (res.stdout.strip().splitlines() or res.stderr.strip().splitlines()
                    or [""])[-1][:120]
            print(f"{wall:8.1f} s  rc={res.returncode}  {line}", flush=True)
            rows.append([line, round(wall, 1), res.returncode, tail])
            if res.returncode != 0:
                print(res.stderr[-2000:], flush=True)
    total = sum(r[1] for r in rows)
    write_result(
        "readme_cli_fashion", "README command-line examples on Fashion-MNIST: run times",
        [{"title": "each command as written in README.md, one fresh process, in order "
                   "(progress off)",
          "columns": ["command", "wall s", "exit code", "last output line"], "rows": rows}],
        anchors=["Issue 13: the README gives run times of the Fashion-MNIST examples."],
        notes=[f"Total {total:.0f} s on {os.cpu_count()} cores (shared with other jobs while "
               "this ran; times are wall clock, not exclusive CPU)."],
        extra={"total_s": total})


if __name__ == "__main__":
    main()
