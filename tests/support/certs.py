"""Throwaway certificate authorities and certificates for TLS tests (``cryptography``).

Server certificates name 127.0.0.1 (an IP SAN: clients connect by address and send no SNI)
and localhost. Everything is written as PEM, in the layouts the clients read.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Issued:
    """A certificate and its key, both PEM."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def write(self, directory: Path, stem: str, cert_suffix: str = ".crt") -> tuple[Path, Path]:
        """``directory/stem.crt`` (or ``cert_suffix``) and ``directory/stem.key``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path = directory / f"{stem}{cert_suffix}"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert_pem)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def self_signed_ca(name: str, key: PrivateKey) -> x509.Certificate:
    """A CA certificate for ``key``, valid from yesterday for 30 days: the test CAs' root, and
    the token server's signing certificate (which Distribution trusts as a rootcertbundle)."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


class CertificateAuthority:
    def __init__(self, name: str = "regcache test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self_signed_ca(name, self.key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert_pem)
        return path

    def server(self, common_name: str = "127.0.0.1") -> Issued:
        """For 127.0.0.1 and localhost."""
        names: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
        ]
        return self._issue(common_name, names, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, common_name: str = "regcache test client") -> Issued:
        return self._issue(common_name, [], ExtendedKeyUsageOID.CLIENT_AUTH)

    def _issue(
        self, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


def regcache_tls(
    ca: CertificateAuthority, directory: Path, *, mutual: bool = False
) -> tuple[dict[str, str], ssl.SSLContext]:
    """regcache's ``tls:`` section for a server pair ``ca`` issues into ``directory``, and a
    client context trusting ``ca``; with ``mutual``, regcache demands client certificates from
    ``ca`` and the context shows one."""
    cert, key = ca.server().write(directory, "server")
    ca_file = ca.write(directory / "ca.crt")
    section = {"cert_file": str(cert), "key_file": str(key)}
    client = ssl.create_default_context(cafile=str(ca_file))
    if mutual:
        section["client_ca_file"] = str(ca_file)
        client.load_cert_chain(*ca.client().write(directory / "client", "client"))
    return section, client


def peer_certificate(host: str, port: int, ca_file: Path) -> x509.Certificate:
    """The certificate a new TLS connection to ``host:port`` is shown, verified by ``ca_file``."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
