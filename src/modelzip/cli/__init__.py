"""The ``modelzip`` command. Each subcommand lives in its own module exposing
``add_parser(subparsers)``, which registers a parser whose ``func(args) -> int`` runs it."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
from collections.abc import Iterator

from ..errors import ConfigError, ModelzipError

COMMANDS = [
    "demo", "train", "eval", "inspect",
    "compress", "auto", "report", "export",
    "search",  # issue 8
    "worker",  # issue 17
]
DATA_PARALLEL = ("compress", "train", "eval", "inspect", "export", "report", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelzip", description="Make trained PyTorch models smaller and faster.")
    parser.add_argument("--version", action="version", version="modelzip 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}_cmd").add_parser(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 with one clear line on bad input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with torchrun(args):
            return int(args.func(args) or 0)
    except ModelzipError as exc:
        print(f"modelzip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelzip {args.command}: interrupted", file=sys.stderr)
        return 130


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
