"""regcache serving HTTPS as a real process, pulled from by skopeo and by Python's ssl: CA
verification, SIGHUP certificate reloads under a live download, and mutual TLS."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.certs import CertificateAuthority, peer_certificate
from tests.support.httpclient import http_request
from tests.support.images import ImageInfo, build_image
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream
from tests.support.waiting import wait_until

MIB = 1024 * 1024


def trusting(ca_file: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if client is not None:
        context.load_cert_chain(*client)
    return context


class Pki:
    """A CA, a server pair issued by it in ``tls/``, and skopeo's cert dir trusting the CA."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = CertificateAuthority()
        self.ca_file = self.ca.write(root / "ca.crt")
        self.cert, self.key = self.ca.server().write(root / "tls", "server")
        self.cert_dir = root / "skopeo-certs"
        self.ca.write(self.cert_dir / "ca.crt")

    def config(self, upstream: Upstream, **tls: Any) -> dict[str, Any]:
        return {
            "upstreams": [upstream.entry("docker.io")],
            "tls": {"cert_file": str(self.cert), "key_file": str(self.key), **tls},
        }


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def https(pki: Pki, upstream: Upstream, regcache_factory: RegcacheFactory) -> RegcacheProcess:
    return regcache_factory(pki.config(upstream), client_ssl=trusting(pki.ca_file))


@pytest.fixture(params=["asyncio", "uvloop"])
def https_on_each_loop(
    request: pytest.FixtureRequest,
    pki: Pki,
    upstream: Upstream,
    regcache_factory: RegcacheFactory,
) -> RegcacheProcess:
    """Both loops' SSL transports: asyncio's falls back from sendfile, uvloop has none."""
    config = {**pki.config(upstream), "event_loop": request.param}
    return regcache_factory(config, client_ssl=trusting(pki.ca_file))


@pytest.fixture(scope="module")
def big(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> ImageInfo:
    """A 24 MiB layer: more than the socket buffers hold, so a reader that pauses really
    holds the server mid-blob."""
    layout = tmp_path_factory.mktemp("tls-big-layout")
    image = build_image(layout, "tlsbig", seed=61, layer_sizes=[24 * MIB])
    skopeo.push(layout, "tlsbig", f"{upstream.host}/library/tlsbig:1.0")
    return image


def sighup(proxy: RegcacheProcess, expect_in_log: str) -> None:
    assert proxy.pid is not None
    before = proxy.log_text().count(expect_in_log)
    os.kill(proxy.pid, signal.SIGHUP)
    wait_until(lambda: proxy.log_text().count(expect_in_log) > before, "the reload")


def test_skopeo_pulls_over_https_with_the_ca(
    https_on_each_loop: RegcacheProcess, pki: Pki, upstream: Upstream, tmp_path: Path
) -> None:
    https = https_on_each_loop
    image = upstream.images.small
    cold = skopeo.pull(https.ref("small", "1.0"), tmp_path / "cold", cert_dir=pki.cert_dir)
    warm = skopeo.pull(https.ref("small", "1.0"), tmp_path / "warm", cert_dir=pki.cert_dir)
    for pulled in (cold, warm):
        assert hashlib.sha256(pulled.manifest).hexdigest() == image.manifest_digest[7:]
        for digest in image.blob_digests:
            assert pulled.blob(digest) == image.blob(digest)
    # The cached pull went out through the copy that replaces sendfile under TLS.
    blobs = len(image.blob_digests)
    assert https.metric("regcache_cache_requests_total", kind="blob", result="hit") == blobs
    for path in ("/healthz", "/readyz", "/", "/status.json"):
        assert https.get(path).status == 200
    assert '"GET /v2/small/manifests/1.0" 200' in https.log_text()


def test_skopeo_without_the_ca_fails_verification_and_nothing_is_logged_as_a_crash(
    https: RegcacheProcess, tmp_path: Path
) -> None:
    empty = tmp_path / "no-certs"
    empty.mkdir()
    with pytest.raises(skopeo.SkopeoError) as info:
        skopeo.pull(https.ref("small", "1.0"), tmp_path / "out", cert_dir=empty)
    assert "certificate signed by unknown authority" in info.value.stderr
    assert https.get("/healthz").status == 200
    assert "Traceback" not in https.log_text()


def _start_download(proxy: RegcacheProcess, ca_file: Path, path: str) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    conn = trusting(ca_file).wrap_socket(raw, server_hostname="127.0.0.1")
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {proxy.host}\r\nConnection: close\r\n\r\n".encode())
    return conn


def _read_body(conn: ssl.SSLSocket, head: bytes) -> tuple[bytes, bytes]:
    """Headers and the rest of the body after ``head``, read until the server closes."""
    data = bytearray(head)
    while chunk := conn.recv(256 * 1024):
        data += chunk
    headers, _, body = bytes(data).partition(b"\r\n\r\n")
    return headers, body


def test_sighup_reload_keeps_a_download_going_and_new_connections_see_the_new_certificate(
    https: RegcacheProcess, pki: Pki, big: ImageInfo, tmp_path: Path
) -> None:
    digest = big.layer_digests[0]
    layer = big.blob(digest)
    path = f"/v2/library/tlsbig/blobs/{digest}"
    old_serial = peer_certificate("127.0.0.1", https.port, pki.ca_file).serial_number
    for warm in (False, True):  # first a miss (follower of the download), then a cache hit
        with _start_download(https, pki.ca_file, path) as conn:
            head = conn.recv(64 * 1024)
            assert head.startswith(b"HTTP/1.1 200")
            # A new certificate from a second CA, swapped in while the client pauses.
            second = CertificateAuthority("second CA")
            second_ca = second.write(tmp_path / f"second-{warm}.crt")
            second.server().write(pki.cert.parent, "server")
            sighup(https, "TLS certificate reloaded")
            fresh = peer_certificate("127.0.0.1", https.port, second_ca)
            assert fresh.serial_number != old_serial
            with pytest.raises(ssl.SSLCertVerificationError):
                peer_certificate("127.0.0.1", https.port, pki.ca_file)
            # Still under way: its access record is written when the response ends.
            assert https.log_text().count(f'"GET {path}"') == int(warm)
            headers, body = _read_body(conn, head)
        assert len(body) == len(layer), headers
        assert hashlib.sha256(body).hexdigest() == digest[7:]
        # Back to the first CA's certificate for the second round.
        pki.ca.server().write(pki.cert.parent, "server")
        sighup(https, "TLS certificate reloaded")
        old_serial = peer_certificate("127.0.0.1", https.port, pki.ca_file).serial_number


def test_a_bad_file_on_reload_keeps_the_old_certificate(
    https: RegcacheProcess, pki: Pki, tmp_path: Path
) -> None:
    served = peer_certificate("127.0.0.1", https.port, pki.ca_file).serial_number
    _, other_key = pki.ca.server().write(tmp_path / "other", "server")
    shutil.copyfile(other_key, pki.key)  # a key that does not match the certificate
    sighup(https, "TLS reload failed")
    assert peer_certificate("127.0.0.1", https.port, pki.ca_file).serial_number == served
    assert https.get("/v2/").status == 200
    assert "does not match the certificate in tls.cert_file" in https.log_text()
    assert "Traceback" not in https.log_text()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    pki: Pki, upstream: Upstream, regcache_factory: RegcacheFactory, tmp_path: Path
) -> None:
    clients = CertificateAuthority("client CA")
    client_ca = clients.write(tmp_path / "client-ca.crt")
    member = clients.client().write(tmp_path / "member", "client")
    proxy = regcache_factory(
        pki.config(upstream, client_ca_file=str(client_ca)),
        client_ssl=trusting(pki.ca_file, member),
    )
    with pytest.raises(skopeo.SkopeoError):
        skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "anonymous", cert_dir=pki.cert_dir)
    # TLS 1.3 settles client certificates after the client's side of the handshake, so the
    # refusal shows as a closed connection on the first read: and no request gets through.
    stranger = pki.ca.client().write(tmp_path / "stranger", "client")
    for refused in (trusting(pki.ca_file), trusting(pki.ca_file, stranger)):
        with pytest.raises((ConnectionError, ssl.SSLError)):
            http_request("GET", proxy.url + "/v2/", ssl_context=refused)
    assert '"GET /v2/' not in proxy.log_text()
    # skopeo shows the *.cert + *.key pair it finds in its cert dir.
    clients.client().write(pki.cert_dir, "client", cert_suffix=".cert")
    pulled = skopeo.pull(proxy.ref("small", "1.0"), tmp_path / "pulled", cert_dir=pki.cert_dir)
    image = upstream.images.small
    assert hashlib.sha256(pulled.manifest).hexdigest() == image.manifest_digest[7:]
    assert proxy.get("/healthz").status == 200
    assert "Traceback" not in proxy.log_text()
