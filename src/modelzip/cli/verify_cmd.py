"""modelzip verify: check a .mzip's Ed25519 signature, then the file itself."""

from __future__ import annotations

from typing import Any

from ..io.mzip import read_contents
from ..io.signing import verify_file
from .common import add_json, emit


def add_parser(sub: Any) -> None:
    p = sub.add_parser("verify", help="check the signature of a .mzip (exit 2 when it was "
                                      "changed or signed by another key)")
    p.add_argument("file", help="a signed .mzip file")
    p.add_argument("--key", required=True,
                   help="the signer's public key (PEM, OpenSSH or 32 raw bytes)")
    add_json(p)
    p.set_defaults(func=run)


def run(args: Any) -> int:
    info = verify_file(args.file, args.key)   # SignatureError: exit 2, one line
    contents = read_contents(args.file)       # and the container and manifest check out
    out = {"file": args.file, "signature": "valid", "key_id": info["key_id"],
           "payload_sha256": info["payload_sha256"], "bytes": contents.size}
    if args.json:
        emit(args, out)
    else:
        print(f"{args.file}: signature valid (key {info['key_id']}), "
              f"payload sha256 {info['payload_sha256']}")
    return 0
