"""modelzip sign: add an Ed25519 signature to an existing .mzip (in place or --out)."""

from __future__ import annotations

from typing import Any

from ..io.mzip import read_contents
from ..io.signing import sign_file
from .common import add_json, emit


def add_parser(sub: Any) -> None:
    p = sub.add_parser("sign", help="sign a .mzip with an Ed25519 private key")
    p.add_argument("file", help="a .mzip file")
    p.add_argument("--key", required=True, help="private key (PEM or 32 raw bytes)")
    p.add_argument("--out", default=None, help="write the signed copy here (default: in place)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    read_contents(args.file)  # sign only files that read back
    info = sign_file(args.file, args.key, args.out)
    out = {"file": args.out or args.file, **info}
    if args.json:
        emit(args, out)
    else:
        print(f"signed {out['file']} with key {info['key_id']}, "
              f"payload sha256 {info['payload_sha256']}")
    return 0
