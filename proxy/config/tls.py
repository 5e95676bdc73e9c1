"""The TLS files of ``tls:`` turned into a server context, or one line saying which file is wrong.

Shared by the loader, which refuses a bad pair before anything starts, and by the server,
which builds its contexts with it at start and again on every SIGHUP; so a file that breaks
between the two is reported in the same words.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from proxy.config.parsers import Invalid


class TlsFileError(Invalid):
    """One of the TLS files is unusable; ``key`` is its setting, e.g. ``tls.key_file``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key


def server_context(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> ssl.SSLContext:
    """A fresh server context: TLS 1.2 at least, Python's default ciphers; with a client CA,
    clients must present a certificate it signed."""
    # Read first, so that an unreadable file is named as such and not as a PEM error.
    cert = _read("tls.cert_file", cert_file)
    key = _read("tls.key_file", key_file)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise TlsFileError("tls.cert_file", f"{str(cert_file)!r} holds no PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise TlsFileError("tls.key_file", f"{str(key_file)!r} holds no PEM private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # Without a password callback OpenSSL would prompt on the terminal for an encrypted
        # key, and a server started by systemd would hang there.
        context.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        raise TlsFileError("tls.key_file", _pair_problem(exc)) from None
    except OSError as exc:
        raise TlsFileError("tls.cert_file", f"cannot load: {exc.strerror or exc}") from None
    if client_ca_file is not None:
        _read("tls.client_ca_file", client_ca_file)
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            reason = f"{str(client_ca_file)!r} holds no usable CA certificate ({_reason(exc)})"
            raise TlsFileError("tls.client_ca_file", reason) from None
        context.verify_mode = ssl.CERT_REQUIRED
        # A resumed session skips the client certificate, and ticket keys outlive a reload:
        # without tickets a client whose CA was taken out of the file cannot come back in
        # on an old session. Registry clients keep connections alive, so this costs little.
        context.num_tickets = 0
        context.options |= ssl.OP_NO_TICKET
    return context


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(key, f"cannot read {str(path)!r}: {exc.strerror or exc}") from None


def _no_password() -> str:
    raise TlsFileError("tls.key_file", "is encrypted; regcache needs a key without a passphrase")


def _pair_problem(exc: ssl.SSLError) -> str:
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "does not match the certificate in tls.cert_file"
    return f"cannot load the certificate and key: {_reason(exc)}"


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(reason).split())
