"""HTTPS on the listen address, with a certificate that SIGHUP replaces in place.

asyncio fixes a server's SSLContext when it starts listening, so the context it listens
with only hands each new connection over to the *current* one: its SNI callback, which
OpenSSL runs on every ClientHello (with or without a server name), sets the connection's
context to the latest one built. A reload builds a whole new context from the files and
swaps it in only if that worked; connections already established keep the context (and
certificate) they were handshaken with, and a bad file leaves the old certificate serving.

Loading a new chain into the live context instead would not do: ``load_cert_chain`` puts the
new certificate in before it checks the key, so a mismatched key would leave a broken pair
serving, and ``load_verify_locations`` only ever adds CAs, so a client CA taken out of the
file would stay trusted until a restart.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web

from proxy.config import Config, ConfigError
from proxy.config.tls import TlsFileError, server_context
from proxy.server.reload import RELOADERS

log = logging.getLogger(__name__)


class ReloadableTls:
    """The listening context, and the current one it hands connections to."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        self.files = (cert_file, key_file, client_ca_file)
        # Built once; only its verify mode matters after the swap (OpenSSL keeps the mode
        # of the context a connection was created from), and client_ca_file is fixed at
        # start, so the mode never needs to change.
        self.listening = server_context(*self.files)
        self.current = self.listening
        self.listening.sni_callback = self._hand_over

    def _hand_over(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if self.current is not self.listening:
            connection.context = self.current

    def reload(self) -> None:
        """Swap in a context built from the files as they are now; on error keep the old."""
        try:
            fresh = server_context(*self.files)
        except TlsFileError as exc:
            log.error(
                "TLS reload failed, still serving the previous certificate: %s: %s", exc.key, exc
            )
            return
        self.current = fresh
        log.info("TLS certificate reloaded from %s", self.files[0])


def listening_context(app: web.Application, config: Config) -> ssl.SSLContext | None:
    """The context to listen with, its reload registered on SIGHUP; None for plain HTTP.

    The loader checked the files; should one have broken since, this raises ConfigError.
    """
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    try:
        tls = ReloadableTls(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    except TlsFileError as exc:
        raise ConfigError(str(exc), source="TLS files at start", key=exc.key) from None
    app[RELOADERS].append(tls.reload)
    return tls.listening
