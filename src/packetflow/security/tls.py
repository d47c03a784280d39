"""Transport security (PFAP §11.1.3, §11.3.1): TLS 1.3-only contexts for servers and
clients, the client certificate's common name, and the small CA that ``packetflow up
--tls`` makes for a local cluster."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import private_dir, write_secret

TLS_DIR = "tls"
# A local cluster's certificates; long enough not to expire under a running demo.
LOCAL_CERT_DAYS = 365


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: str
    key: str
    client_ca: str | None = None  # set: mTLS, a client certificate is required

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # §11.3.1
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.client_ca)
        return ctx


def client_context(ca_file: str | None = None, cert: str | None = None,
                   key: str | None = None) -> ssl.SSLContext:  # fmt: skip
    """A TLS 1.3 client context trusting ``ca_file`` (else the system store), presenting
    ``cert``/``key`` when given (mTLS)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


def peer_common_name(transport: Any) -> str | None:
    """The verified client certificate's CN on an asyncio transport, if any."""
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


@dataclass(frozen=True, slots=True)
class LocalPki:
    """The files of a local cluster's CA (``DATA_DIR/security/tls``)."""

    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"


def make_local_pki(root: Path, names: list[str]) -> LocalPki:
    """A CA and one certificate per ``names`` entry (CN=name, valid for loopback), made
    once and reused; the CA's private key never leaves ``root``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = LocalPki(private_dir(root))
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=LOCAL_CERT_DAYS)

    def pem_key(k: ec.EllipticCurvePrivateKey) -> str:
        return k.private_bytes(serialization.Encoding.PEM,
                               serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()  # fmt: skip

    ca_key_path = root / "ca.key"
    if ca_key_path.exists() and pki.ca.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "packetflow-local-ca")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        write_secret(ca_key_path, pem_key(ca_key))
        write_secret(pki.ca, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    for name in names:
        if pki.cert(name).exists() and pki.key(name).exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            ]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        write_secret(pki.key(name), pem_key(key))
        write_secret(pki.cert(name), cert.public_bytes(serialization.Encoding.PEM).decode())
    return pki
