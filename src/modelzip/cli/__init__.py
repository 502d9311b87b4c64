"""The ``modelzip`` command. Each subcommand lives in its own module exposing
``add_parser(subparsers)``, which registers a parser whose ``func(args) -> int`` runs it."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ModelzipError

COMMANDS = [
    "demo", "train", "eval", "inspect",
    "compress", "auto", "report", "export",
    "search",  # issue 8
    "compare", "verify", "sign", "keygen",  # issue 18
]


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
        return int(args.func(args) or 0)
    except ModelzipError as exc:
        print(f"modelzip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelzip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
