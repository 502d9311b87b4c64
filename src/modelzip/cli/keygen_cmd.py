"""modelzip keygen: a new Ed25519 key pair for signing .mzip files."""

from __future__ import annotations

from typing import Any

from ..io.signing import generate_keypair
from .common import add_json, emit


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keygen", help="write a new Ed25519 key pair (PEM) for signing")
    p.add_argument("--out", default="modelzip-key.pem",
                   help="private key path (mode 0600); the public key goes to <out>.pub")
    p.add_argument("--public", default=None, help="public key path (default <out>.pub)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    info = generate_keypair(args.out, args.public)
    if args.json:
        emit(args, info)
    else:
        print(f"private key: {info['private']} (keep it secret)\n"
              f"public key:  {info['public']}\nkey id:      {info['key_id']}")
    return 0
