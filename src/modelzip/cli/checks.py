"""Checks of command-line arguments made before any work starts.

:func:`check_args` runs for every command (from :func:`modelzip.cli.main`): input files
exist and are files, outputs can be written, numbers are in range, recipes are text YAML
with a list of stages, ``--weights`` are not already compressed, storage URLs have a known
scheme. Each problem is one :class:`ConfigError` line naming the option and what is wrong.
:func:`factory` and :func:`fits` check a ``--model module:factory`` and that a model
takes the inputs of the chosen data.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..errors import ConfigError, DataError

# option -> what it should be: (lowest allowed, whether the lowest is excluded)
POSITIVE = ("epochs", "lr", "trials", "workers", "threads", "train_epochs", "time_budget",
            "retrain_epochs", "train_limit", "max_params", "max_macs", "max_latency_ms")
NON_NEGATIVE = ("max_drop", "seed", "max_class_drop")
FRACTIONS = ("min_agreement",)
# finite but absurd values would run for ages (--epochs 1e308): refuse above these
MAXIMA = {"epochs": 10_000, "train_epochs": 10_000, "retrain_epochs": 10_000,
          "trials": 1_000_000, "workers": 1024, "threads": 1024, "lr": 100.0,
          "time_budget": 1e7, "max_drop": 1e6, "seed": 2**32 - 1}
INPUT_FILES = {"file": "a .mzip file", "baseline": "a .mzip file",
               "weights": "a .mzip or .safetensors file"}
STORAGE_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+",
                   "journal:///")
FOLDER_OUTPUTS = {"demo"}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
              "pytorch_model.bin.index.json")
FOLDER_FORMATS = {"hf", "compressed-tensors"}


def opt(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_args(args: Any) -> None:
    """Refuse malformed arguments of any command, one clear line, before any work."""
    values = vars(args)
    _check_ranges(values)
    for key, what in INPUT_FILES.items():
        if values.get(key):
            input_file(values[key], what, opt(key) if key != "file" else "")
    for key in INPUT_FILES:
        if str(values.get(key) or "").endswith(".mzip"):
            mzip_header(values[key], opt(key) if key != "file" else "")
    if values.get("weights"):
        not_compressed(values["weights"])
    if values.get("recipe"):
        check_recipe(values["recipe"])
    for key in ("data_root", "tokenizer"):
        if values.get(key):
            input_folder(values[key], opt(key))
    if isinstance(values.get("storage"), str):
        check_storage(values["storage"])
    if values.get("out") is not None:
        folder = (values.get("command") in FOLDER_OUTPUTS
                  or values.get("format") in FOLDER_FORMATS)
        output_path(values["out"], "--out", folder=folder)
    if isinstance(values.get("report"), str):
        output_path(values["report"], "--report")


def _check_ranges(values: dict[str, Any]) -> None:
    for key in POSITIVE:
        v = values.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
            raise ConfigError(f"{opt(key)} must be positive, got {v}")
    for key in NON_NEGATIVE:
        v = values.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise ConfigError(f"{opt(key)} must be >= 0, got {v}")
    for key, hi in MAXIMA.items():
        v = values.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > hi:
            raise ConfigError(f"{opt(key)} must be at most {hi:g}, got {v:.4g}")
    for key in FRACTIONS:
        v = values.get(key)
        if isinstance(v, float) and not 0 <= v <= 1:
            raise ConfigError(f"{opt(key)} must lie in [0, 1], got {v}")
    opset = values.get("opset")
    if isinstance(opset, int) and not 7 <= opset <= 30:
        raise ConfigError(f"--opset must lie in [7, 30], got {opset}")


def input_file(path: str, what: str, option: str = "") -> Path:
    """``path`` as an existing, readable file (not a folder)."""
    p = Path(path)
    name = f"{option} {path}" if option else path
    if p.is_dir():
        raise ConfigError(f"{name} is a folder, expected {what}")
    if not p.exists():
        raise ConfigError(f"{name}: no such file (expected {what})")
    if not p.is_file():
        raise ConfigError(f"{name} is not a regular file, expected {what}")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{name}: permission denied")
    return p


def mzip_header(path: str, option: str = "") -> None:
    """A cheap first look at a .mzip: the safetensors header length and its opening brace,
    so that a foreign file is refused with its name before anything else reads it."""
    name = f"{option} {path}" if option else path
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if len(head) < 9:
        raise ConfigError(f"{name} is not a .mzip file ({size} bytes: too short)")
    n = int.from_bytes(head[:8], "little")
    if not 2 <= n <= size - 8 or head[8:9] != b"{":
        raise ConfigError(f"{name} is not a .mzip file (no safetensors header)")


def input_folder(path: str, option: str) -> Path:
    """``path`` as an existing folder."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{option} {path}: no such folder")
    if not p.is_dir():
        raise ConfigError(f"{option} {path} is a file, expected a folder")
    return p


def output_path(path: str, option: str, *, folder: bool = False) -> None:
    """Refuse an output that cannot be written: a folder where a file goes (or the
    reverse), a missing or read-only parent folder. Probes with a real temp file."""
    p = Path(path)
    if not str(path).strip():
        raise ConfigError(f"{option} is empty")
    if p.exists() and p.is_dir() != folder:
        kind = "a folder" if p.is_dir() else "a file"
        raise ConfigError(f"{option} {path} is {kind}, expected "
                          f"{'a folder' if folder else 'a file path'}")
    parent = p.parent
    if folder:  # created with its parents: the nearest existing ancestor must take it
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.exists():
        raise ConfigError(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: {parent} is not a folder")
    if p.exists() and not folder and not os.access(p, os.W_OK):
        raise ConfigError(f"{option} {path}: file is read-only")
    try:
        fd, probe = tempfile.mkstemp(prefix=".modelzip-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write in folder {parent} "
                          f"({exc.strerror or exc})") from None


def check_recipe(ref: str) -> None:
    """A recipe given as a file must be UTF-8 YAML whose ``stages`` is a list; then the
    full validation of :meth:`Recipe.load` (unknown stages, keys, ranges)."""
    from ..pipeline import Recipe

    p = Path(ref)
    if p.is_dir():
        raise ConfigError(f"--recipe {ref} is a folder, expected a .yaml file or a "
                          "built-in recipe name")
    if p.suffix in (".yaml", ".yml") or p.is_file():
        p = input_file(ref, "a .yaml recipe", "--recipe")
        if p.suffix not in (".yaml", ".yml"):
            raise ConfigError(f"--recipe {ref}: a recipe file must end in .yaml or .yml")
        data = _recipe_yaml(p)
        if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
            got = type(data.get("stages") if isinstance(data, dict) else data).__name__
            raise ConfigError(f"--recipe {ref}: expected a mapping with a 'stages' list of "
                              f"one-key mappings, got {got}")
    try:
        Recipe.load(ref)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ConfigError(f"--recipe {ref} is malformed: {exc}") from None


def _recipe_yaml(p: Path) -> Any:
    raw = p.read_bytes()
    if len(raw) > 1_000_000:
        raise ConfigError(f"--recipe {p}: {len(raw):,} bytes is too large for a recipe")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--recipe {p} is not a text YAML file (byte 0x{raw[exc.start]:02x} "
                          f"at offset {exc.start})") from None
    if "\x00" in text:
        raise ConfigError(f"--recipe {p} is not a text YAML file (NUL byte)")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--recipe {p} is not valid YAML: {yaml_problem(exc)}") from None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """One short line for a YAML error: where and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(problem).split())


def not_compressed(path: str) -> None:
    """``--weights`` must be trained, uncompressed weights: a .mzip whose layers are
    already pruned or coded below 16 bits is refused before any work."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return
    from ..io.inspect import layer_table
    from ..io.mzip import read_contents

    rows, _ = layer_table(read_contents(p))
    for r in rows:
        if r["kept"] < 1.0 or r["weight_bits"] < 16:
            raise ConfigError(
                f"--weights {path} is already compressed (layer {r['layer']}: "
                f"{100 * r['kept']:.0f}% kept, {r['weight_bits']:.1f} bits per weight); give "
                "the trained uncompressed weights, e.g. from 'modelzip train'")


def check_storage(url: str) -> None:
    """An Optuna storage URL with a known scheme; a SQLite file's folder must exist."""
    if not url.startswith((*STORAGE_SCHEMES, "postgres://")):
        shown = re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)  # never echo a password
        raise ConfigError(f"--storage {shown!r}: expected sqlite:///FILE, postgresql://..., "
                          "mysql://... or journal:///FILE")
    for scheme in ("sqlite:///", "journal:///"):
        if url.startswith(scheme):
            target = url[len(scheme):]
            if not target:
                raise ConfigError(f"--storage {url!r}: no file named after {scheme}")
            output_path(target, "--storage")


def _stdlib_file(path: str | None) -> bool:
    if not path or path in ("built-in", "frozen"):
        return True
    here = Path(path).resolve()
    for key in ("stdlib", "platstdlib"):
        root = Path(sysconfig.get_paths()[key]).resolve()
        if root in here.parents and "site-packages" not in here.parts \
                and "dist-packages" not in here.parts:
            return True
    return False


def factory(spec: str) -> None:
    """Refuse a ``--model module:function`` that is not a model factory, before calling it.

    The rule: the module is not part of Python's standard library (found without importing
    it), and the attribute is a Python function (or an nn.Module class) defined outside the
    standard library that can be called with no arguments. Importing the module runs its
    code, as the user asked; the function's result is checked to be an nn.Module after."""
    from ..io.arch import check_factory

    mod_name, _, attr = check_factory(spec).partition(":")
    top = mod_name.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ConfigError(f"--model {spec}: no module named '{top}' (a factory is "
                          "package.module:function importable from here)")
    where = found.origin or next(iter(found.submodule_search_locations or []), None)
    if _stdlib_file(where):
        raise ConfigError(f"--model {spec}: '{top}' is part of Python's standard library, "
                          "not a model factory (a function returning an nn.Module)")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--model {spec}: cannot import the factory ({exc})") from None
    _check_callable(spec, obj)


def _check_callable(spec: str, obj: Any) -> None:
    is_class = inspect.isclass(obj) and issubclass(obj, nn.Module)
    if not (inspect.isfunction(obj) or is_class):
        raise ConfigError(f"--model {spec}: {type(obj).__name__} is not a Python function "
                          "returning an nn.Module")
    if _stdlib_file(getattr(inspect.getmodule(obj), "__file__", None)):
        raise ConfigError(f"--model {spec}: defined in Python's standard library, not a "
                          "model factory")
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        params = []
    required = [p.name for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise ConfigError(f"--model {spec}: a factory is called with no arguments, but it "
                          f"requires {', '.join(required)}")


def model_folder(path: str) -> None:
    """A folder given as --model must be a Hugging Face model folder (config.json)."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ConfigError(f"--model {path} is a folder without config.json: a Hugging Face "
                          "model folder needs config.json and its weights; otherwise give a "
                          "zoo name, a .mzip file or package.module:factory")
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--model {path}: config.json is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--model {path}: config.json is not a JSON object")
    if not any((p / w).is_file() for w in HF_WEIGHTS):
        raise ConfigError(f"--model {path}: a Hugging Face folder with config.json but no "
                          f"weights ({' or '.join(HF_WEIGHTS[:2])})")


def input_shape(model: nn.Module) -> str:
    """What the first weighted layer takes, in words."""
    for m in model.modules():
        if isinstance(m, nn.Embedding) or hasattr(m, "num_embeddings"):
            return f"token ids below {m.num_embeddings}"
        if hasattr(m, "in_channels") and not isinstance(m, nn.Sequential):
            return f"(N, {m.in_channels}, H, W) images"
        if hasattr(m, "in_features"):
            return f"(N, {m.in_features}) features (a flattened image)"
    return "an unknown input shape"


def fits(model: nn.Module, example: Any, data: str) -> None:
    """Run ``model`` on one example of ``data``; a shape mismatch is a DataError naming
    the model's input and the data's, instead of an error deep inside ``forward``."""
    if not isinstance(example, torch.Tensor):
        return
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        shape = "x".join(str(d) for d in example.shape[1:]) or "scalar"
        kind = "token ids of length" if not example.is_floating_point() else "inputs of shape"
        raise DataError(f"the model does not take --data {data}: it expects "
                        f"{input_shape(model)}, the data gives {kind} {shape} "
                        f"({' '.join(str(exc).split())[:120]})") from None
    finally:
        model.train(was_training)
