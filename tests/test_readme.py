"""README.md's code blocks run as written, on tiny settings.

Every ```python block runs in order: a block that starts with ``import modelzip`` opens a
group, the blocks after it share its namespace, and each group runs in one fresh
subprocess. Every ```bash block whose lines start with ``modelzip `` runs line by line, one
fresh ``python -m modelzip`` process per command, all in one folder (later commands use
earlier files). ```yaml blocks must be valid recipes. A block right after the HTML comment
``<!-- no-test -->`` is skipped. The settings are made tiny by a ``sitecustomize`` shim on
PYTHONPATH: built-in datasets are cut to a few hundred images, training epochs are capped,
progress is off; ``--trials``/``--workers`` of CLI lines are cut. A failure names the
README line of the block.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from modelzip.pipeline import Recipe

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = "<!-- no-test -->"
TIMEOUT_S = 600

SHIM = r'''
"""Tiny settings for README blocks (loaded as sitecustomize)."""
import os, sys
os.environ["MODELZIP_NO_PROGRESS"] = "1"
TRAIN, TEST, EPOCHS = 384, 256, 1.0
import importlib
try:
    t = importlib.import_module("modelzip.train")  # the module, not mz.train the function
    ds = importlib.import_module("modelzip.data.datasets")
    dist = importlib.import_module("modelzip.distill")
except Exception:  # not this project: leave the interpreter alone
    t = None
if t is not None:
    def limited(fn):
        def wrapper(*a, **kw):
            kw["train_limit"] = min(kw.get("train_limit") or TRAIN, TRAIN)
            kw["test_limit"] = min(kw.get("test_limit") or TEST, TEST)
            return fn(*a, **kw)
        return wrapper

    def capped(fn):
        def wrapper(*a, **kw):
            if "epochs" in kw:
                kw["epochs"] = min(float(kw["epochs"]), EPOCHS)
            return fn(*a, **kw)
        return wrapper

    swaps = {}
    for mod, names, wrap in ((ds, ("digits", "fashion_mnist", "mnist"), limited),
                             (t, ("train", "finetune"), capped)):
        for name in names:
            swaps[getattr(mod, name)] = wrap(getattr(mod, name))
    swaps[dist.distill] = capped(dist.distill)

    def patch_all():
        for name, mod in list(sys.modules.items()):
            if name.startswith("modelzip") and mod is not None:
                for key, value in list(vars(mod).items()):
                    if callable(value) and value in swaps:
                        setattr(mod, key, swaps[value])
    import modelzip, modelzip.cli, modelzip.demo, modelzip.pipeline  # noqa: F401
    modelzip.cli.build_parser()  # imports every command module before patching
    patch_all()
'''

RUNNER = r'''
import json, sys, traceback
blocks = json.loads(open(sys.argv[1]).read())
ns = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile(code, f"README.md:{line}", "exec"), ns)
    except BaseException as exc:
        traceback.print_exc()
        print(f"README block at line {line} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        sys.exit(1)
'''


def blocks(text: str) -> list[tuple[str, int, str]]:
    """(language, first code line number, code) of every fenced block not marked
    ``<!-- no-test -->``."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        prev = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        if prev != SKIP:
            out.append((m.group(1), i + 2, "\n".join(lines[i + 1:j])))
        i = j + 1
    return out


def python_groups(text: str) -> list[list[tuple[int, str]]]:
    groups: list[list[tuple[int, str]]] = []
    for lang, line, code in blocks(text):
        if lang != "python":
            continue
        if not groups or code.lstrip().startswith(("import modelzip", "from modelzip")):
            groups.append([])
        groups[-1].append((line, code))
    return groups


def cli_commands(text: str) -> list[tuple[int, list[str]]]:
    """(README line, argv after 'modelzip') of every command line of the bash blocks."""
    out = []
    for lang, line, code in blocks(text):
        if lang not in ("bash", "sh", "shell"):
            continue
        joined, start = "", line
        for k, raw in enumerate(code.splitlines()):
            if not joined:
                start = line + k
            joined += raw.rstrip("\\").rstrip() + " "
            if raw.rstrip().endswith("\\"):
                continue
            argv = shlex.split(joined, comments=True)
            joined = ""
            if argv and argv[0] == "modelzip":
                out.append((start, tiny(argv[1:])))
    return out


def tiny(argv: list[str]) -> list[str]:
    """Cut the options that multiply work (trials, workers)."""
    cuts = {"--trials": "2", "--workers": "1"}
    return [cuts[argv[i - 1]] if i and argv[i - 1] in cuts else a for i, a in enumerate(argv)]


def env(tmp: Path) -> dict[str, str]:
    (tmp / "sitecustomize.py").write_text(SHIM)
    e = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT / "src")]),
         "MODELZIP_NO_PROGRESS": "1"}
    if not e.get("MODELZIP_DATA"):
        shared = ROOT.parent / "shared" / "datasets"
        if shared.is_dir():
            e["MODELZIP_DATA"] = str(shared)
    return e


TEXT = README.read_text(encoding="utf-8")
GROUPS = python_groups(TEXT)
COMMANDS = cli_commands(TEXT)


def test_readme_has_tested_blocks() -> None:
    assert GROUPS and COMMANDS


@pytest.mark.parametrize("group", GROUPS, ids=[f"line{g[0][0]}" for g in GROUPS])
def test_python_blocks(group: list[tuple[int, str]], tmp_path: Path) -> None:
    (tmp_path / "blocks.json").write_text(json.dumps(group))
    (tmp_path / "runner.py").write_text(RUNNER)
    p = subprocess.run([sys.executable, "runner.py", "blocks.json"], cwd=tmp_path,
                       env=env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert p.returncode == 0, p.stderr[-3000:]


def test_cli_blocks(tmp_path: Path) -> None:
    e = env(tmp_path)
    for line, argv in COMMANDS:
        p = subprocess.run([sys.executable, "-m", "modelzip", *argv], cwd=tmp_path, env=e,
                           capture_output=True, text=True, timeout=TIMEOUT_S)
        assert p.returncode == 0, f"README line {line}: modelzip {' '.join(argv)}\n" \
                                  f"{p.stderr[-3000:]}"


def test_yaml_blocks_are_recipes() -> None:
    for lang, line, code in blocks(TEXT):
        if lang == "yaml":
            try:
                Recipe.from_yaml(code)
            except Exception as exc:  # noqa: BLE001 - the line number is the point
                pytest.fail(f"README line {line}: {exc}")


def test_links_point_somewhere() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", TEXT):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"
