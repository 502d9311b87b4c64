"""The HTML report renders in headless Chromium without console errors.

Builds a real report (LeNet-300-100 on digits through mz.compress with per-layer
sensitivity), opens it in headless Chromium, saves a screenshot to
benchmarks/results/report_screenshot.png and counts console errors and failed loads.
Needs /usr/bin/chromium (Debian package `chromium`); not part of CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from common import RESULTS, write_result

import modelzip as mz

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=1", "--window-size=1100,2600"]


def build_report(path: Path) -> None:
    torch.manual_seed(0)
    split = mz.data.digits()
    model = mz.zoo.lenet300(in_features=64)
    mz.train(model, split.train, epochs=20, lr=2e-3, progress=False)

    def evaluate(m):
        return mz.accuracy(m, split.test)

    res = mz.compress(model, "demo", evaluate=evaluate, train_data=split.train,
                      max_drop=0.01, progress=False)
    sens = mz.sensitivity(model, mz.Magnitude(sparsity=0.95), evaluate)
    mz.report(res.model, model, result=res, evaluate=evaluate, sensitivity=sens,
              example_inputs=next(iter(split.test))[0][:1],
              title="modelzip report: LeNet-300-100 on digits").to_html(path)


def main() -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        html, shot = Path(tmp) / "report.html", Path(tmp) / "shot.png"
        build_report(html)
        proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp}/profile",
                               f"--screenshot={shot}", html.as_uri()],
                              capture_output=True, text=True, timeout=120)
        log = proc.stderr
        console = [ln for ln in log.splitlines() if "CONSOLE" in ln]
        errors = [ln for ln in console if re.search(r"error|uncaught", ln, re.I)]
        # the page fetches nothing; Chromium's own account/update look-ups are not the page
        failed = [ln for ln in log.splitlines() if ("Failed to load" in ln or "net::ERR" in ln)
                  and "google_apis" not in ln]
        RESULTS.mkdir(exist_ok=True)
        shutil.copy(shot, RESULTS / "report_screenshot.png")
        size = html.stat().st_size
    write_result(
        "report_render", "HTML report rendered in headless Chromium",
        [{"columns": ["report bytes", "chromium exit", "console messages", "console errors",
                      "failed loads", "screenshot"],
          "rows": [[size, proc.returncode, len(console), len(errors), len(failed),
                    "results/report_screenshot.png"]]}],
        notes=["Self-contained page: inline CSS, PNG plots as data URIs, no scripts, so "
               "nothing is fetched. Console lines are read from Chromium's own log "
               "(--enable-logging=stderr --v=1)."] + errors[:5] + failed[:5])


if __name__ == "__main__":
    main()
