"""What `compress`, `auto` and `report` share: resolving a model, its data and its metric."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as mzdata
from .. import zoo
from ..distributed.ddp import agreed
from ..errors import ConfigError, ModelzipError
from ..io.mzip import load
from ..train import accuracy, perplexity, train
from .common import load_dataset, zoo_for_data

TRAIN_EPOCHS = {"digits": 30, "fashion-mnist": 15, "mnist": 10, "shakespeare": 1}


@dataclass
class Job:
    """A model with its baseline, data and metric (higher is better)."""

    model: nn.Module
    evaluate: Callable[[nn.Module], float]
    metric_name: str
    train_data: Any = None
    calib_data: Any = None
    example: Any = None


def add_model_args(p: Any) -> None:
    p.add_argument("--model", required=True,
                   help="zoo name, a local Hugging Face folder, or package.module:factory")
    p.add_argument("--weights", default=None,
                   help="trained weights (.mzip or .safetensors); zoo models without weights "
                        "are trained first")
    p.add_argument("--data", default="digits",
                   help="digits, fashion-mnist, mnist, shakespeare, a text file, or "
                        "'sentences' (embedding fidelity, for Hugging Face encoders)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--train-epochs", type=float, default=None,
                   help="epochs to train a zoo model that has no --weights")
    p.add_argument("--seed", type=int, default=0)


def resolve(args: Any, progress: bool = True) -> Job:
    """Build the Job described by the model/data arguments."""
    torch.manual_seed(args.seed)
    if Path(args.model).is_dir():
        return _hf_job(args)
    split = load_dataset(args.data, args.data_root)
    model = _build(args.model, split)
    if args.weights:
        _load_weights(model, args.weights)
    elif args.model in zoo.names():
        epochs = args.train_epochs or TRAIN_EPOCHS.get(args.data, 10)
        print(f"no --weights: training {args.model} on {args.data} for {epochs} epochs first")
        train(model, split.train, epochs=epochs, lr=1e-3, progress=progress)
    lm = "vocab_size" in mzdata.info(split)
    if lm:
        def evaluate(m: nn.Module) -> float:
            return -perplexity(m, split.test)
    else:
        def evaluate(m: nn.Module) -> float:
            return accuracy(m, split.test)
    calib = [b for _, b in zip(range(8), split.train)]
    # under torchrun every rank must take the same accept / back-off decision
    return Job(model, agreed(evaluate), "-perplexity" if lm else "accuracy", split.train,
               calib, calib[0][0][:1])


def _build(spec: str, split: mzdata.Split) -> nn.Module:
    if spec in zoo.names():
        return zoo_for_data(spec, split)
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelzipError(f"cannot import model factory '{spec}': {exc}") from None
        model = factory()
        if not isinstance(model, nn.Module):
            raise ModelzipError(f"'{spec}' did not return an nn.Module")
        return model
    raise ModelzipError(f"unknown model '{spec}': not a zoo model ({', '.join(zoo.names())}), "
                        "a Hugging Face folder, or package.module:factory")


def _load_weights(model: nn.Module, path: str) -> None:
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            missing, unexpected = model.load_state_dict(load_file(str(p)), strict=False)
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise ModelzipError(f"cannot load weights {p}: {str(exc).splitlines()[0]}") from None
        if missing or unexpected:
            raise ModelzipError(f"weights {p} do not fit the model "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    else:
        load(p, model=model)


def _hf_job(args: Any) -> Job:
    from ..io import hf

    if args.data != "sentences":
        raise ConfigError("Hugging Face encoders are evaluated with --data sentences")
    model = hf.load_pretrained(args.model)
    tok = hf.tokenizer(args.model)
    sents = mzdata.sentences(640)
    evals, calib = hf.encode_batches(tok, sents[:512]), hf.encode_batches(tok, sents[512:])
    reference = hf.sentence_embeddings(model, evals)
    original = copy.deepcopy(model)

    def evaluate(m: nn.Module) -> float:
        emb = hf.sentence_embeddings(m, evals)
        return float((emb * reference).sum(-1).mean())

    del original
    return Job(model, evaluate, "cosine", None, calib, calib[0]["input_ids"][:1])
