"""The ``modelzip`` command. Each subcommand lives in its own module exposing
``add_parser(subparsers)``, which registers a parser whose ``func(args) -> int`` runs it."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import NoReturn

from ..errors import ConfigError, ModelzipError

COMMANDS = [
    "demo", "train", "eval", "inspect",
    "compress", "auto", "report", "export",
    "search",  # issue 8
    "worker",  # issue 17
    "compare", "verify", "sign", "keygen",  # issue 18
]
DATA_PARALLEL = ("compress", "train", "eval", "inspect", "export", "report", "demo")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the problem and where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="modelzip", description="Make trained PyTorch models smaller and faster.")
    parser.add_argument("--version", action="version", version="modelzip 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}_cmd").add_parser(sub)
    for p in sub.choices.values():  # every --help shows the defaults
        p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return parser


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse NaN and infinity in any numeric option before any work starts."""
    for key, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{key.replace('_', '-')} must be a finite number, got {value}")


def describe(exc: BaseException) -> str:
    """One line for an exception that reached the command line."""
    if isinstance(exc, OSError):
        where = f" '{exc.filename}'" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 with one clear line on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_numbers(args)
        from .checks import check_args

        check_args(args)
        with torchrun(args):
            return int(args.func(args) or 0)
    except (ModelzipError, OSError) as exc:
        print(f"modelzip {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelzip {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, traceback on request
        if os.environ.get("MODELZIP_DEBUG"):
            raise
        print(f"modelzip {args.command}: internal error: {type(exc).__name__}: "
              f"{describe(exc)} (set MODELZIP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


@contextlib.contextmanager
def torchrun(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun: join the process group; rank 0 alone prints and writes the output
    files (the other ranks, holding the same model, write theirs into a scratch folder that
    is deleted). No-op in one process."""
    from ..distributed import ddp

    if not ddp.launched():
        yield
        return
    if args.command not in DATA_PARALLEL:
        raise ConfigError(f"'{args.command}' does not run under torchrun: searches scale with "
                          "'modelzip worker' processes sharing a storage (docs/cluster.md)")
    ddp.init_from_env()
    try:
        with contextlib.ExitStack() as stack:
            if not ddp.is_main():
                devnull = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stdout(devnull))
                stack.enter_context(contextlib.redirect_stderr(devnull))
                scratch = stack.enter_context(tempfile.TemporaryDirectory())
                for key in ("out", "report"):
                    if getattr(args, key, None):
                        setattr(args, key, os.path.join(scratch, os.path.basename(
                            getattr(args, key))))
            yield
    finally:
        ddp.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
