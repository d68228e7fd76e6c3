"""Request signing: Binance's documented vectors, Ed25519, credential loading and secrecy."""

from __future__ import annotations

import base64
import os
import pickle
import traceback
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trader.errors import ConfigError
from trader.exchange.signing import Credentials, check_key_file, encode_params, hmac_sha256_hex, load_credentials
from trader.exchange.trading import client_order_id

# Binance spot REST API, "SIGNED Endpoint Examples for POST /api/v3/order" (HMAC keys section)
DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_PARAMS = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1"),
              ("price", "0.1"), ("recvWindow", "5000"), ("timestamp", "1499827319559")]


def test_the_documented_hmac_example_signs_to_the_documented_signature() -> None:
    payload = encode_params(DOC_PARAMS)
    assert payload == "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    assert hmac_sha256_hex(DOC_SECRET.encode(), payload.encode()) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    q = Credentials.hmac("key", DOC_SECRET).signed_query(DOC_PARAMS)
    assert q.endswith("&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71")


def test_the_documented_non_ascii_example_is_percent_encoded_before_signing() -> None:
    params = [("symbol", "１２３４５６"), *DOC_PARAMS[1:]]
    payload = encode_params(params)
    assert payload.startswith("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY")
    assert hmac_sha256_hex(DOC_SECRET.encode(), payload.encode()) == "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"


def test_the_documented_mixed_query_and_body_example_concatenates_without_a_separator() -> None:
    query = encode_params(DOC_PARAMS[:4])
    body = encode_params(DOC_PARAMS[4:])
    signature = hmac_sha256_hex(DOC_SECRET.encode(), (query + body).encode())
    assert signature == "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
    assert Credentials.hmac("k", DOC_SECRET).signed_query(DOC_PARAMS[:4], body=body).endswith(f"signature={signature}")


def _ed25519_pem() -> tuple[bytes, object]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem, key.public_key()


def test_ed25519_signatures_are_base64_then_percent_encoded_and_verify() -> None:
    pem, public = _ed25519_pem()
    creds = Credentials.ed25519("edkey", pem)
    payload = encode_params(DOC_PARAMS)
    signature = creds.sign(payload)
    public.verify(base64.b64decode(signature), payload.encode())  # type: ignore[attr-defined]
    q = creds.signed_query(DOC_PARAMS)
    sent = q.rsplit("signature=", 1)[1]
    assert "+" not in sent and "/" not in sent and "=" not in sent  # percent-encoded
    from urllib.parse import unquote

    assert unquote(sent) == signature


def test_credentials_come_from_the_environment_only_and_key_files_must_be_private(tmp_path: Path) -> None:
    assert load_credentials({}) is None
    c = load_credentials({"TRADER_API_KEY": "abc123", "TRADER_API_SECRET": "s3cr3t-value"})
    assert c is not None and c.kind == "hmac"
    with pytest.raises(ConfigError, match="without TRADER_API_SECRET"):
        load_credentials({"TRADER_API_KEY": "abc123"})
    with pytest.raises(ConfigError, match="TRADER_API_KEY is not"):
        load_credentials({"TRADER_API_SECRET": "x"})
    pem, _ = _ed25519_pem()
    f = tmp_path / "ed25519.pem"
    f.write_bytes(pem)
    f.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials({"TRADER_API_KEY": "abc123", "TRADER_ED25519_KEY_FILE": str(f)})
    f.chmod(0o600)
    c2 = load_credentials({"TRADER_API_KEY": "abc123", "TRADER_ED25519_KEY_FILE": str(f)})
    assert c2 is not None and c2.kind == "ed25519"
    s = tmp_path / "secret"
    s.write_text("file-secret\n")
    s.chmod(0o640)
    with pytest.raises(ConfigError, match="group or others"):
        check_key_file(s)
    s.chmod(0o400)
    c3 = load_credentials({"TRADER_API_KEY": "abc123", "TRADER_API_SECRET_FILE": str(s)})
    assert c3 is not None and c3.sign(b"x") == hmac_sha256_hex(b"file-secret", b"x")
    with pytest.raises(ConfigError, match="only one"):
        load_credentials({"TRADER_API_KEY": "a", "TRADER_API_SECRET": "b", "TRADER_API_SECRET_FILE": str(s)})


def test_credentials_never_show_their_secret() -> None:
    secret = "TOPSECRET-" + os.urandom(8).hex()
    c = Credentials.hmac("public-key-1234", secret)
    assert secret not in repr(c) and secret not in str(c) and "1234" in repr(c)
    assert not hasattr(c, "__dict__")
    with pytest.raises(TypeError):
        pickle.dumps(c)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        text = "".join(traceback.format_exc())
    assert secret not in text


def test_client_order_ids_are_deterministic_short_and_legal() -> None:
    a = client_order_id("trend", "BTCUSDT", 1_700_000_000_000, "entry")
    assert a == client_order_id("trend", "BTCUSDT", 1_700_000_000_000, "entry")
    assert a != client_order_id("trend", "BTCUSDT", 1_700_000_000_000, "tp1")
    assert a != client_order_id("trend", "BTCUSDT", 1_700_003_600_000, "entry")
    assert len(a) <= 36 and all(ch.isalnum() or ch in "-_" for ch in a)
    assert len(client_order_id("x" * 100, "BTCUSDT", 0, "a-very-long-leg-name!!")) <= 36
