"""A self-signed certificate for ``trader replay --tls`` (``https://`` and ``wss://`` on loopback).

Generated with the ``cryptography`` library: an EC P-256 key and an X.509 certificate for
``localhost`` and the bound address (subject alternative names), valid for 30 days, written as PEM
to a directory the caller chooses. Clients trust it by loading the certificate file (it is its own
CA), e.g. ``ssl.create_default_context(cafile=cert)`` or ``verify=cert`` in httpx.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

__all__ = ["self_signed", "server_context"]


def self_signed(host: str, directory: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (0600) for ``host`` into ``directory``; return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trader replay exchange")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for h in {host, "127.0.0.1"}:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context for the certificate and key."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
