"""Payload hashes and Ed25519 signatures of .mzip files; the verify / sign / keygen /
compare commands."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

import modelzip as mz
from modelzip.cli import main
from modelzip.errors import ConfigError, FormatError, SignatureError
from modelzip.io import signing
from modelzip.io.mzip import read_contents


@pytest.fixture
def files(tmp_path):
    model = mz.zoo.lenet300(in_features=64)
    path = tmp_path / "m.mzip"
    mz.save(model, path)
    keys = signing.generate_keypair(tmp_path / "k.pem")
    other = signing.generate_keypair(tmp_path / "other.pem")
    return path, keys, other, model


def test_good_signature_accepted_and_file_still_reads(files):
    path, keys, _, model = files
    before = signing.payload_sha256(path.read_bytes())
    info = signing.sign_file(path, keys["private"])
    data = path.read_bytes()
    assert info["payload_sha256"] == before == signing.payload_sha256(data)
    assert signing.verify_file(path, keys["public"])["key_id"] == keys["key_id"]
    # a private key verifies too (its public half); raw 32-byte keys load
    signing.verify_bytes(data, keys["private"])
    loaded = mz.load(path)
    x = torch.randn(2, 64)
    assert torch.equal(loaded(x), model.eval()(x))
    read_contents(path)
    with safe_open(str(path), "np") as f:  # still a plain safetensors file
        assert f.metadata()["signature_alg"] == "ed25519"
    assert signing.signature_info(data)["key_id"] == keys["key_id"]


@pytest.mark.parametrize("where", ["data", "manifest", "metadata", "trailing"])
def test_tampered_file_refused(files, where):
    path, keys, _, _ = files
    signing.sign_file(path, keys["private"])
    data = bytearray(path.read_bytes())
    if where == "data":
        data[-5] ^= 0x01
    elif where == "manifest":
        header_len = int.from_bytes(data[:8], "little")
        data[8 + header_len + 3] ^= 0x80      # the manifest tensor comes first
    elif where == "metadata":
        i = data.index(b'"version":"2"')
        data[i + 11] = ord("3")
    else:
        data += b"\0" * 8
    with pytest.raises(SignatureError):
        signing.verify_bytes(bytes(data), keys["public"])


def test_wrong_key_and_unsigned_refused(files):
    path, keys, other, _ = files
    with pytest.raises(SignatureError, match="not signed"):
        signing.verify_file(path, keys["public"])
    signing.sign_file(path, keys["private"])
    with pytest.raises(SignatureError, match="another key|not by the given key"):
        signing.verify_file(path, other["public"])
    # a forged key id does not help: the signature itself is checked
    data = path.read_bytes().replace(keys["key_id"].encode(), other["key_id"].encode())
    with pytest.raises(SignatureError):
        signing.verify_bytes(data, other["public"])
    # detached signature API
    raw = path.read_bytes()
    sig = signing.sign(raw, keys["private"])
    signing.verify(raw, sig, keys["public"])
    with pytest.raises(SignatureError):
        signing.verify(raw, sig, other["public"])


def test_key_errors(tmp_path, files):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(ConfigError, match="not found"):
        signing.load_private_key(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nabc\n")
    with pytest.raises(ConfigError, match="Ed25519"):
        signing.load_private_key(tmp_path / "junk.pem")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    with pytest.raises(ConfigError, match="not Ed25519"):
        signing.load_private_key(pem)
    _, keys, _, _ = files
    key = signing.load_private_key(keys["private"])
    enc = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(ConfigError, match="encrypted"):
        signing.load_private_key(enc)
    with pytest.raises(ConfigError, match="exists"):
        signing.generate_keypair(keys["private"])
    with pytest.raises(FormatError):
        signing.payload_sha256(b"not a safetensors file")


def test_cli_keygen_sign_verify(tmp_path, files, capsys):
    path, _, _, _ = files
    key = tmp_path / "cli.pem"
    assert main(["keygen", "--out", str(key)]) == 0
    assert main(["sign", str(path), "--key", str(key)]) == 0
    capsys.readouterr()
    assert main(["verify", str(path), "--key", f"{key}.pub", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["signature"] == "valid"
    assert out["payload_sha256"] == signing.payload_sha256(path.read_bytes())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["verify", str(path), "--key", f"{key}.pub"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("modelzip verify: error:") and "\n" not in err


def test_cli_compare(tmp_path, capsys):
    torch.manual_seed(0)
    split = mz.data.digits()
    model = mz.zoo.lenet300(in_features=64)
    mz.train(model, split.train, epochs=1, lr=3e-3, progress=False)
    small = mz.quantize(copy.deepcopy(model), mz.WeightOnly(bits=2, group_size=None))
    a, b = tmp_path / "a.mzip", tmp_path / "b.mzip"
    mz.save(model, a)
    mz.save(small, b)
    args = ["compare", str(a), str(b), "--data", "digits", "--robust-samples", "64",
            "--pgd-steps", "2"]
    assert main(args + ["--json", "--html", str(tmp_path / "r.html")]) == 0
    out = json.loads(capsys.readouterr().out)
    rep = out["trust"]
    assert rep["task"] == "classification" and len(rep["per_class"]) == 10
    assert rep["robustness"]["original"]["examples"] == 64
    html = (tmp_path / "r.html").read_text()
    assert "Trust: what compression changed" in html and "trust_confusion" in html
    # a constraint the 2-bit model cannot meet: exit 1, the failure named
    assert main(args + ["--no-robustness", "--min-agreement", "1.0"]) == 1
    text = capsys.readouterr().out
    assert "FAILED min_agreement=" in text and "per class" in text
    assert main(args + ["--eps", "x"]) == 2
    # modelzip report gains the trust section when given a baseline and data
    assert main(["report", str(b), "--baseline", str(a), "--data", "digits", "--out",
                 str(tmp_path / "rep.html"), "--no-robustness", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trust"]["agreement"] == pytest.approx(rep["agreement"])
    assert "trust_per_class" in (tmp_path / "rep.html").read_text()


def test_save_sign_key_and_load_verify_key(files):
    path, keys, other, model = files
    mz.save(model, path, sign_key=keys["private"])
    loaded = mz.load(path, verify_key=keys["public"])
    x = torch.randn(2, 64)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(SignatureError):
        mz.load(path, verify_key=other["public"])
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(SignatureError):
        mz.load(path, verify_key=keys["public"])
    mz.save(model, path)
    with pytest.raises(SignatureError, match="not signed"):
        mz.load(path, verify_key=keys["public"])

