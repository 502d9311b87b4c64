"""Integrity of a .mzip: the SHA-256 of its payload and an Ed25519 signature over it.

A .mzip is a safetensors file. Its *payload* is everything a reader uses: every tensor's
name, dtype, shape and bytes, and every metadata entry except the three signature entries
below. The payload digest is SHA-256 over, in order,

    b"modelzip-payload-v1\\0"
    u64 LE length + canonical JSON {"metadata": {...}, "tensors": {name: {dtype, shape}}}
                    (keys sorted, no spaces, UTF-8)
    for each tensor by name (sorted): u64 LE length + its bytes

so it does not depend on how the header is laid out, and signing (which rewrites the
header) does not change it. The signature is Ed25519 (RFC 8032, via the ``cryptography``
package) over ``b"modelzip-signature-v1\\0" + digest`` and lives in the safetensors
metadata: ``signature`` (base64, 64 bytes), ``signature_alg`` (``"ed25519"``) and
``signature_key`` (the signer's key id: the first 16 hex digits of SHA-256 of the raw
32-byte public key). Any safetensors reader still reads a signed file.

The safetensors layout is parsed by the same strict code as the .mzip reader
(``safetensors_io.parse``), with one more rule here: the tensors must tile the data area
exactly (no gaps, overlaps or trailing bytes), so that no byte of the file escapes the
digest except header whitespace.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, FormatError, SignatureError
from . import safetensors_io as stio

PAYLOAD_TAG = b"modelzip-payload-v1\0"
SIGNATURE_TAG = b"modelzip-signature-v1\0"
SIG_KEYS = ("signature", "signature_alg", "signature_key")
TEXT_KEYS = (b"-----BEGIN", b"ssh-")  # key files that are text, whatever their length


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - a core dependency
        raise ConfigError("signing needs: pip install cryptography") from None
    return ed25519


# ------------------------------------------------------------------------- the payload
def parse(data: bytes) -> tuple[dict[str, Any], dict[str, str], memoryview]:
    """(tensor table, metadata, data area) of safetensors bytes, validated strictly: the
    shared parser (safetensors_io.parse) plus exact tiling of the data area."""
    entries, meta, body = stio.parse(data)
    stio.check_tiled(entries, body)
    header = {name: {"dtype": d, "shape": shape, "data_offsets": [b, e]}
              for name, (d, shape, b, e) in entries.items()}
    return header, meta, body


def payload_digest(data: bytes) -> bytes:
    """SHA-256 (32 bytes) of the payload of safetensors bytes ``data`` (module docstring)."""
    header, meta, body = parse(data)
    canon = {"metadata": {k: v for k, v in meta.items() if k not in SIG_KEYS},
             "tensors": {k: {"dtype": v["dtype"], "shape": v["shape"]}
                         for k, v in header.items()}}
    text = json.dumps(canon, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()
    h = hashlib.sha256(PAYLOAD_TAG)
    h.update(struct.pack("<Q", len(text)) + text)
    for name in sorted(header):
        b, e = header[name]["data_offsets"]
        h.update(struct.pack("<Q", e - b))
        h.update(body[b:e])
    return h.digest()


def payload_sha256(data: bytes) -> str:
    """Hex SHA-256 of the payload of a .mzip's bytes (what ``modelzip inspect`` shows;
    the same before and after signing)."""
    return payload_digest(data).hex()


# ------------------------------------------------------------------------------ keys
def _key_bytes(key: Any, what: str) -> bytes:
    if isinstance(key, (bytes, bytearray)):
        return bytes(key)
    if isinstance(key, (str, os.PathLike)):
        p = Path(key)
        if not p.is_file():
            raise ConfigError(f"{what} key file not found: {p}")
        if p.stat().st_size > 1 << 16:
            raise ConfigError(f"{p} is too large to be a key file")
        return p.read_bytes()
    raise ConfigError(f"{what} key must be a path, bytes or an Ed25519 key object, "
                      f"got {type(key).__name__}")


def load_private_key(key: Any) -> Any:
    """An Ed25519 private key from a key object, a PEM (PKCS#8, unencrypted) or raw
    32-byte file or bytes."""
    ed = _crypto()
    if isinstance(key, ed.Ed25519PrivateKey):
        return key
    raw = _key_bytes(key, "private")
    from cryptography.hazmat.primitives import serialization

    try:
        if len(raw) == 32 and not raw.startswith(TEXT_KEYS):
            return ed.Ed25519PrivateKey.from_private_bytes(raw)
        loaded = serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise ConfigError("the private key is encrypted; modelzip needs an unencrypted "
                          "PEM key (modelzip keygen writes one)") from None
    except ValueError:
        raise ConfigError("not an Ed25519 private key (expected PEM or 32 raw bytes)") from None
    if not isinstance(loaded, ed.Ed25519PrivateKey):
        raise ConfigError(f"the private key is {type(loaded).__name__}, not Ed25519")
    return loaded


def load_public_key(key: Any) -> Any:
    """An Ed25519 public key from a key object (a private key gives its public half),
    a PEM, OpenSSH (``ssh-ed25519 ...``) or raw 32-byte file or bytes."""
    ed = _crypto()
    if isinstance(key, ed.Ed25519PublicKey):
        return key
    if isinstance(key, ed.Ed25519PrivateKey):
        return key.public_key()
    raw = _key_bytes(key, "public")
    from cryptography.hazmat.primitives import serialization

    try:
        if len(raw) == 32 and not raw.startswith(TEXT_KEYS):
            return ed.Ed25519PublicKey.from_public_bytes(raw)
        if raw.startswith(b"ssh-"):
            loaded = serialization.load_ssh_public_key(raw)
        elif b"PRIVATE KEY" in raw:
            loaded = load_private_key(raw).public_key()
        else:
            loaded = serialization.load_pem_public_key(raw)
    except (ValueError, TypeError):
        raise ConfigError("not an Ed25519 public key (expected PEM, OpenSSH or 32 raw "
                          "bytes)") from None
    if not isinstance(loaded, ed.Ed25519PublicKey):
        raise ConfigError(f"the public key is {type(loaded).__name__}, not Ed25519")
    return loaded


def key_id(public_key: Any) -> str:
    """First 16 hex digits of SHA-256 of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = load_public_key(public_key).public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ----------------------------------------------------------------- sign and verify
def sign(data: bytes, private_key: Any) -> bytes:
    """The 64-byte Ed25519 signature of the payload of ``data``."""
    return load_private_key(private_key).sign(SIGNATURE_TAG + payload_digest(data))


def verify(data: bytes, signature: bytes, public_key: Any) -> None:
    """Check ``signature`` over the payload of ``data``; SignatureError when the file was
    changed since signing or signed by another key."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    try:
        digest = payload_digest(data)
    except SignatureError:
        raise
    except FormatError as exc:
        raise SignatureError(f"cannot verify: the file is damaged ({exc})") from None
    try:
        key.verify(bytes(signature), SIGNATURE_TAG + digest)
    except InvalidSignature:
        raise SignatureError("signature does not match: the file was changed after "
                             "signing, or signed by another key") from None


# ------------------------------------------------------------ signatures inside files
def attach(data: bytes, signature: bytes, public_key: Any) -> bytes:
    """``data`` with the signature entries set in its metadata (header rewritten and
    padded to 8 bytes; the data area is unchanged, so the payload digest is too)."""
    header, meta, body = parse(data)
    meta = dict(meta)
    meta.update(signature=base64.b64encode(bytes(signature)).decode("ascii"),
                signature_alg="ed25519", signature_key=key_id(public_key))
    text = json.dumps({"__metadata__": meta, **header}, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(body)


def sign_bytes(data: bytes, private_key: Any) -> bytes:
    """``data`` signed: what ``mz.save(..., sign_key=...)`` writes."""
    key = load_private_key(private_key)
    return attach(data, sign(data, key), key.public_key())


def signature_info(data: bytes) -> dict[str, str] | None:
    """The signature entries of ``data`` (None when unsigned) and the payload SHA-256."""
    _, meta, _ = parse(data)
    if "signature" not in meta:
        return None
    return {"payload_sha256": payload_sha256(data), "alg": meta.get("signature_alg", ""),
            "key_id": meta.get("signature_key", ""), "signature": meta["signature"]}


def verify_bytes(data: bytes, public_key: Any) -> dict[str, str]:
    """Verify the signature embedded in ``data`` with ``public_key``: returns the payload
    SHA-256 and the key id; SignatureError when unsigned, changed or signed by another key."""
    key = load_public_key(public_key)
    try:
        _, meta, _ = parse(data)
    except FormatError as exc:
        raise SignatureError(f"cannot verify: the file is damaged ({exc})") from None
    if "signature" not in meta:
        raise SignatureError("the file is not signed")
    if meta.get("signature_alg") != "ed25519":
        raise SignatureError(f"unsupported signature algorithm {meta.get('signature_alg')!r}")
    try:
        sig = base64.b64decode(meta["signature"], validate=True)
    except ValueError:
        sig = b""
    if len(sig) != 64:
        raise SignatureError("the signature entry is malformed")
    mine, theirs = key_id(key), meta.get("signature_key", "")
    if theirs and theirs != mine:
        raise SignatureError(f"signed by key {theirs}, not by the given key {mine}")
    verify(data, sig, key)
    return {"payload_sha256": payload_sha256(data), "key_id": mine}


def _read(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"no such file: {p}")
    return p.read_bytes()


def verify_file(path: str | os.PathLike, public_key: Any) -> dict[str, str]:
    """:func:`verify_bytes` on the file at ``path``."""
    return verify_bytes(_read(path), public_key)


def sign_file(path: str | os.PathLike, private_key: Any,
              out: str | os.PathLike | None = None) -> dict[str, str]:
    """Sign the .mzip at ``path`` in place (or into ``out``), atomically; returns the
    payload SHA-256 and the key id."""
    key = load_private_key(private_key)
    data = sign_bytes(_read(path), key)
    stio.write_atomic(out if out is not None else path, data)
    return {"payload_sha256": payload_sha256(data), "key_id": key_id(key.public_key())}


# -------------------------------------------------------------------------- keygen
def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` (refusing to overwrite) via temp + rename."""
    if path.exists():
        raise ConfigError(f"{path} exists; not overwriting a key file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generate_keypair(private_path: str | os.PathLike,
                     public_path: str | os.PathLike | None = None) -> dict[str, str]:
    """Write a new Ed25519 key pair as PEM: the private key (PKCS#8, mode 0600) and the
    public key (``<private>.pub`` by default). Returns both paths and the key id."""
    from cryptography.hazmat.primitives import serialization

    priv_path = Path(private_path)
    pub_path = Path(public_path) if public_path is not None else priv_path.with_name(
        priv_path.name + ".pub")
    key = _crypto().Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub_path.exists():
        raise ConfigError(f"{pub_path} exists; not overwriting a key file")
    _write_new(priv_path, priv, 0o600)
    _write_new(pub_path, pub, 0o644)
    return {"private": str(priv_path), "public": str(pub_path),
            "key_id": key_id(key.public_key())}
