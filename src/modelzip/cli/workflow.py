"""What `compress`, `auto` and `report` share: resolving a model, its data and its metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as mzdata
from .. import zoo
from ..devices import resolve_device
from ..distributed.ddp import agreed
from ..errors import ConfigError, ModelzipError
from ..io.arch import from_factory
from ..io.mzip import load
from ..progress import note
from ..train import accuracy, perplexity, train
from . import checks
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
    eval_data: Any = None  # the labelled test batches (trust constraints judge on them)


def add_trust_code(p: Any) -> None:
    p.add_argument("--trust-code", action="store_true",
                   help="allow a file whose model is built by a user factory (module:function) "
                        "to import and run that code")


def add_model_args(p: Any) -> None:
    p.add_argument("--model", required=True,
                   help="zoo name, a local Hugging Face folder, a .mzip file, or "
                        "package.module:factory")
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
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or auto: where training, calibration and evaluation "
                        "compute (the model stays on the CPU between steps)")
    p.add_argument("--tokenizer", default=None,
                   help="Hugging Face tokenizer folder for --data sentences (default: the "
                        "model's folder, else all-MiniLM-L6-v2's)")
    add_trust_code(p)


def resolve(args: Any, progress: bool = True) -> Job:
    """Build the Job described by the model/data arguments."""
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)  # a missing CUDA device is refused up front
    if Path(args.model).is_dir():
        checks.model_folder(args.model)
    if Path(args.model).is_dir() or args.data == "sentences":
        return _hf_job(args, progress)
    split = load_dataset(args.data, args.data_root)
    model = _build(args.model, split, args.trust_code)
    if args.weights:
        _load_weights(model, args.weights)
    calib = [b for _, b in zip(range(8), split.train)]
    checks.fits(model, calib[0][0], args.data)  # status lines start once the input is sound
    note(f"loaded data {args.data} and model {args.model}"
         + (f" with weights {args.weights}" if args.weights else ""), progress=progress)
    if not args.weights and args.model in zoo.names():
        epochs = args.train_epochs or TRAIN_EPOCHS.get(args.data, 10)
        note(f"no --weights: training {args.model} on {args.data} for {epochs} epochs first",
             progress=progress)
        train(model, split.train, epochs=epochs, lr=1e-3, progress=progress, device=device)
    lm = "vocab_size" in mzdata.info(split)
    if lm:
        def evaluate(m: nn.Module) -> float:
            return -perplexity(m, split.test, device=device)
    else:
        def evaluate(m: nn.Module) -> float:
            return accuracy(m, split.test, device=device)
    calib = [b for _, b in zip(range(8), split.train)]
    # under torchrun every rank must take the same accept / back-off decision
    return Job(model, agreed(evaluate), "-perplexity" if lm else "accuracy", split.train,
               calib, calib[0][0][:1], split.test)


def _build(spec: str, split: mzdata.Split | None, trust_code: bool) -> nn.Module:
    if spec in zoo.names():
        if split is None:
            raise ConfigError(f"zoo model '{spec}' needs an image or text dataset")
        return zoo_for_data(spec, split)
    if spec.endswith(".mzip"):
        checks.input_file(spec, "a .mzip file", "--model")
        checks.mzip_header(spec, "--model")
        return load(spec, trust_code=trust_code)
    if ":" in spec:
        checks.factory(spec)
        return from_factory(spec)  # records the factory, so its .mzip can rebuild it
    raise ModelzipError(f"unknown model '{spec}': not a zoo model ({', '.join(zoo.names())}), "
                        "a Hugging Face folder, a .mzip file, or package.module:factory")


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


def _hf_job(args: Any, progress: bool = True) -> Job:
    """An encoder judged by the cosine of its sentence embeddings to the original's."""
    from ..io import hf

    if args.data != "sentences":
        raise ConfigError(f"--model {args.model} is a Hugging Face model folder: evaluate it "
                          "with --data sentences (embedding fidelity to the original)")
    folder = Path(args.model).is_dir()
    note(f"loading model {args.model}", progress=progress)
    model = hf.load_pretrained(args.model) if folder else _build(args.model, None,
                                                                   args.trust_code)
    note("loading the tokenizer and encoding 640 sentences", progress=progress)
    tok = hf.tokenizer(args.tokenizer or (args.model if folder else hf.minilm_path()))
    sents = mzdata.sentences(640)
    evals, calib = hf.encode_batches(tok, sents[:512]), hf.encode_batches(tok, sents[512:])
    evaluate = embedding_fidelity(model, evals)
    return Job(model, evaluate, "cosine", None, calib, calib[0]["input_ids"][:1])


def embedding_fidelity(reference: nn.Module, batches: list[dict[str, torch.Tensor]]
                       ) -> Callable[[nn.Module], float]:
    """evaluate(model): mean cosine of its sentence embeddings to ``reference``'s."""
    from ..io import hf

    ref = hf.sentence_embeddings(reference, batches)

    def evaluate(m: nn.Module) -> float:
        return float((hf.sentence_embeddings(m, batches) * ref).sum(-1).mean())

    return evaluate


def file_metric(args: Any, baseline: nn.Module | None
                ) -> tuple[str, Callable[[nn.Module], float], Any]:
    """(name, metric(model), example input) for evaluating a loaded file on ``args.data``:
    accuracy, perplexity (lower is better) or, for ``sentences``, the embedding cosine to
    ``baseline`` (an encoder has no accuracy of its own)."""
    if args.data == "sentences":
        from ..io import hf

        if baseline is None:
            raise ConfigError("--data sentences measures embedding fidelity: give --baseline "
                              "(the original model's .mzip)")
        tok = hf.tokenizer(getattr(args, "tokenizer", None) or hf.minilm_path())
        batches = hf.encode_batches(tok, mzdata.sentences(512))
        return "cosine", embedding_fidelity(baseline, batches), batches[0]["input_ids"][:1]
    split = load_dataset(args.data, args.data_root)
    example = next(iter(split.test))[0][:1]
    lm = "vocab_size" in mzdata.info(split)

    def metric(m: nn.Module) -> float:
        checks.fits(m, example, args.data)
        return perplexity(m, split.test) if lm else accuracy(m, split.test)

    return ("perplexity" if lm else "accuracy"), metric, example
