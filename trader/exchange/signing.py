"""Signed requests (Binance spot "Request security"): credentials, payloads and signatures.

Rules (Binance spot REST API, "SIGNED (TRADE and USER_DATA) Endpoint security" and "Signed
Endpoint Examples"):

- the API key travels in the ``X-MBX-APIKEY`` header;
- the signed payload is the *percent-encoded* query string concatenated with the request body
  (no ``&`` between them); non-ASCII values are UTF-8 percent-encoded before signing;
- HMAC-SHA256 signatures are hexadecimal; Ed25519 signatures are base64, and (being sent as a
  parameter) percent-encoded themselves;
- ``timestamp`` (ms) and ``recvWindow`` (default 5000 ms, at most 60000) bound when the request is
  valid: the server accepts ``timestamp < serverTime + 1000`` and ``serverTime - timestamp <= recvWindow``.

Credentials come only from the environment (``TRADER_API_KEY`` with ``TRADER_API_SECRET``, or
``TRADER_API_SECRET_FILE``, or ``TRADER_ED25519_KEY_FILE`` — a PEM private key), and key files
must be readable by their owner only (mode 0600 or stricter): :func:`load_credentials` refuses a
group/world-readable file. A :class:`Credentials` never shows its secret: ``repr``/``str`` print
the key's last 4 characters only, and the secret lives in a closure, not an attribute, so neither
tracebacks with locals nor ``vars()`` reveal it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from trader.errors import ConfigError

__all__ = [
    "DEFAULT_RECV_WINDOW_MS",
    "MAX_RECV_WINDOW_MS",
    "Credentials",
    "check_key_file",
    "encode_params",
    "hmac_sha256_hex",
    "load_credentials",
]

DEFAULT_RECV_WINDOW_MS = 5000
MAX_RECV_WINDOW_MS = 60_000


def encode_params(params: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> str:
    """``key=value&...`` with keys and values UTF-8 percent-encoded (RFC 3986 unreserved kept), in
    the given order: the exact bytes that are sent and signed. Pure.

    >>> encode_params({"symbol": "１２３４５６", "side": "BUY"})
    'symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY'
    """
    items = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{quote(str(k), safe='-_.~')}={quote(str(v), safe='-_.~')}" for k, v in items)


def hmac_sha256_hex(secret: bytes, payload: bytes) -> str:
    """HMAC-SHA256 of ``payload`` keyed with ``secret``, lower-case hex (Binance's HMAC signature). Pure."""
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def check_key_file(path: Path) -> bytes:
    """Read a key file that only its owner may read.

    Raises:
        ConfigError: missing/unreadable, or readable/writable by group or others (chmod 600 it).
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror or exc}") from None


class Credentials:
    """An API key and the means to sign with its secret; the secret is never exposed.

    Build with :meth:`hmac`, :meth:`ed25519` or :func:`load_credentials`.

    Attributes:
        api_key: the public key id sent as ``X-MBX-APIKEY``.
        kind: ``"hmac"`` or ``"ed25519"``.
    """

    __slots__ = ("_sign", "api_key", "kind")

    def __init__(self, api_key: str, kind: str, sign: Callable[[bytes], str]) -> None:
        if not api_key or not api_key.isascii() or any(c.isspace() for c in api_key):
            raise ConfigError("TRADER_API_KEY is empty or contains spaces / non-ASCII characters")
        self.api_key = api_key
        self.kind = kind
        self._sign = sign

    @classmethod
    def hmac(cls, api_key: str, secret: str | bytes) -> Credentials:
        """HMAC-SHA256 credentials."""
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not key:
            raise ConfigError("the API secret is empty")
        return cls(api_key, "hmac", lambda payload: hmac_sha256_hex(key, payload))

    @classmethod
    def ed25519(cls, api_key: str, private_key_pem: bytes, password: bytes | None = None) -> Credentials:
        """Ed25519 credentials from a PEM (PKCS#8) private key.

        Raises:
            ConfigError: not an Ed25519 private key.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(private_key_pem, password=password)
        except (ValueError, TypeError):
            raise ConfigError("the Ed25519 key file is not a PEM private key (or needs a password)") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("the key file holds a private key that is not Ed25519")
        return cls(api_key, "ed25519", lambda payload: base64.b64encode(key.sign(payload)).decode("ascii"))

    def sign(self, payload: bytes | str) -> str:
        """The signature of ``payload`` (hex for HMAC, base64 for Ed25519; not yet percent-encoded)."""
        return self._sign(payload.encode() if isinstance(payload, str) else payload)

    def signed_query(self, params: Iterable[tuple[str, Any]] | Mapping[str, Any], body: str = "") -> str:
        """``params`` percent-encoded with ``&signature=...`` appended (signature over query + body)."""
        query = encode_params(params)
        signature = self.sign((query + body).encode())
        return f"{query}&signature={quote(signature, safe='')}" if query else f"signature={quote(signature, safe='')}"

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r}, api_key='…{self.api_key[-4:]}')"

    __str__ = __repr__

    def __reduce__(self) -> Any:  # never pickled (so never cached or sent to a worker process)
        raise TypeError("Credentials cannot be pickled")


def load_credentials(environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from the environment, or None when ``TRADER_API_KEY`` is not set.

    ``TRADER_API_KEY`` plus one of ``TRADER_API_SECRET`` (HMAC), ``TRADER_API_SECRET_FILE``
    (HMAC, secret in a 0600 file) or ``TRADER_ED25519_KEY_FILE`` (Ed25519 PEM private key, 0600).

    Raises:
        ConfigError: a key without a secret, two secrets, or a key file readable by others.
    """
    env = os.environ if environ is None else environ
    api_key = env.get("TRADER_API_KEY", "").strip()
    sources = [k for k in ("TRADER_API_SECRET", "TRADER_API_SECRET_FILE", "TRADER_ED25519_KEY_FILE") if env.get(k)]
    if not api_key:
        if sources:
            raise ConfigError(f"{sources[0]} is set but TRADER_API_KEY is not")
        return None
    if not sources:
        raise ConfigError("TRADER_API_KEY is set without TRADER_API_SECRET, TRADER_API_SECRET_FILE or TRADER_ED25519_KEY_FILE")
    if len(sources) > 1:
        raise ConfigError(f"set only one of {', '.join(sources)}")
    source = sources[0]
    if source == "TRADER_API_SECRET":
        return Credentials.hmac(api_key, env[source].strip())
    data = check_key_file(Path(env[source]).expanduser())
    if source == "TRADER_API_SECRET_FILE":
        return Credentials.hmac(api_key, data.strip())
    return Credentials.ed25519(api_key, data)
