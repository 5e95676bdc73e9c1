"""regcache over HTTPS in the test's event loop: every endpoint and both blob paths (cached,
and followed while downloading, which cannot use the kernel's sendfile), and the SIGHUP
reload hook swapping the certificate under live connections."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import Config, ConfigError
from proxy.server.app import run_server
from proxy.server.reload import RELOADERS, reload_all
from tests.fast.conftest import blob_path, stall_once
from tests.support.certs import CertificateAuthority
from tests.support.fakeregistry import FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache, make_config

TAG = "/v2/library/app/manifests/1.0"


def trusting(ca: CertificateAuthority, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    if client is not None:
        context.load_cert_chain(*client)
    return context


@pytest.fixture
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture
def pair(tmp_path: Path, ca: CertificateAuthority) -> tuple[Path, Path]:
    return ca.server().write(tmp_path / "tls", "server")


@pytest.fixture
async def https(
    tmp_path: Path, registry: FakeRegistry, ca: CertificateAuthority, pair: tuple[Path, Path]
) -> AsyncIterator[InProcessRegcache]:
    config = make_config(
        tmp_path / "cache", registry.url, tls_cert_file=pair[0], tls_key_file=pair[1]
    )
    regcache = InProcessRegcache(config, client_ssl=trusting(ca))
    await regcache.start()
    yield regcache
    await regcache.stop()


async def status_with(url: str, context: ssl.SSLContext | bool, path: str = "/healthz") -> int:
    """A request on a connection of its own, trusting only ``context``."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(url + path) as response,
    ):
        return response.status


async def test_every_endpoint_and_the_access_log_over_https(
    https: InProcessRegcache, image: FakeImage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="regcache.access")
    assert https.url.startswith("https://")
    for path in ("/healthz", "/readyz", "/", "/status.json", "/metrics", "/v2/", TAG):
        assert (await https.get(path)).status == 200, path
    records = [r.__dict__["fields"] for r in caplog.records if r.name == "regcache.access"]
    assert [r["path"] for r in records][-2:] == ["/v2/", TAG]
    assert records[-1]["cache"] == "miss"


async def test_plain_http_to_the_https_port_gets_no_answer(https: InProcessRegcache) -> None:
    with pytest.raises(aiohttp.ClientError):
        await status_with(https.url.replace("https://", "http://"), False)


async def test_blobs_over_https_followed_while_downloading_and_cached(
    https: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    digest, layer = image.layer_digests[1], image.layers[1]
    registry.faults.append(stall_once(digest))
    # On a cold blob one request leads the download and the others follow its growing file.
    answers = await asyncio.gather(*(https.get(blob_path(digest)) for _ in range(4)))
    assert all(a.status == 200 and a.body == layer for a in answers)
    joins = await https.metric("regcache_dedup_joins_total", kind="blob")
    hits = await https.metric("regcache_cache_requests_total", kind="blob", result="hit")
    assert joins + hits == 3
    assert registry.count("GET", blob_path(digest)) == 1
    cached = await https.get(blob_path(digest), {"Range": "bytes=1000-"})
    assert (cached.status, cached.body) == (206, layer[1000:])
    assert (await https.get(blob_path(digest))).body == layer


async def test_reload_serves_the_new_certificate_to_new_connections_only(
    https: InProcessRegcache, ca: CertificateAuthority, pair: tuple[Path, Path]
) -> None:
    assert (await https.get("/healthz")).status == 200  # a kept-alive connection, old cert
    second = CertificateAuthority("second CA")
    assert https.app is not None
    second.server().write(pair[0].parent, "server")
    reload_all(https.app)
    assert await status_with(https.url, trusting(second)) == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await status_with(https.url, trusting(ca))
    # The established connection was not dropped: this client trusts only the old CA, so any
    # new connection of its would fail verification, as the one above did.
    for _ in range(3):
        assert (await https.get("/healthz")).status == 200


async def test_a_failed_reload_keeps_the_old_certificate(
    https: InProcessRegcache,
    ca: CertificateAuthority,
    pair: tuple[Path, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert https.app is not None
    pair[1].write_text("not a key\n")
    reload_all(https.app)
    assert await status_with(https.url, trusting(ca)) == 200
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "still serving the previous certificate: tls.key_file:" in failure.getMessage()
    assert failure.exc_info is None


async def test_one_failing_reloader_does_not_stop_the_others(
    https: InProcessRegcache, pair: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise OSError("htpasswd vanished")

    assert https.app is not None
    https.app[RELOADERS].insert(0, broken)
    second = CertificateAuthority("second CA")
    second.server().write(pair[0].parent, "server")
    reload_all(https.app)
    assert await status_with(https.url, trusting(second)) == 200
    assert any("htpasswd vanished" in r.exc_text for r in caplog.records if r.exc_text)


async def test_mutual_tls_and_reloading_the_client_ca(
    tmp_path: Path, registry: FakeRegistry, ca: CertificateAuthority, pair: tuple[Path, Path]
) -> None:
    clients = CertificateAuthority("client CA")
    client_ca = clients.write(tmp_path / "clients.crt")
    config = make_config(
        tmp_path / "cache",
        registry.url,
        tls_cert_file=pair[0],
        tls_key_file=pair[1],
        tls_client_ca_file=client_ca,
    )
    member = clients.client().write(tmp_path / "member", "client")
    stranger = ca.client().write(tmp_path / "stranger", "client")
    regcache = InProcessRegcache(config, client_ssl=trusting(ca, member))
    await regcache.start()
    try:
        assert (await regcache.get("/v2/")).status == 200
        with pytest.raises(aiohttp.ClientError):
            await status_with(regcache.url, trusting(ca))
        with pytest.raises(aiohttp.ClientError):
            await status_with(regcache.url, trusting(ca, stranger))
        # Rotated: the file now holds only the other CA, and the first stops being trusted.
        ca.write(client_ca)
        assert regcache.app is not None
        reload_all(regcache.app)
        assert await status_with(regcache.url, trusting(ca, stranger)) == 200
        with pytest.raises(aiohttp.ClientError):
            await status_with(regcache.url, trusting(ca, member))
    finally:
        await regcache.stop()


def test_run_server_listens_with_tls_and_reloads_on_sighup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(web, "run_app", lambda **kwargs: calls.append(kwargs))
    run_server(Config(cache_dir=tmp_path, tls_cert_file=pair[0], tls_key_file=pair[1]))
    [call] = calls
    assert isinstance(call["ssl_context"], ssl.SSLContext)
    assert call["ssl_context"].minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(call["app"][RELOADERS]) == 1
    loop: asyncio.AbstractEventLoop = call["loop"]
    try:
        assert loop.remove_signal_handler(signal.SIGHUP)
    finally:
        loop.close()


def test_files_broken_between_loading_and_serving_are_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    monkeypatch.setattr(web, "run_app", lambda **kwargs: pytest.fail("served"))
    config = Config(cache_dir=tmp_path, tls_cert_file=pair[0], tls_key_file=pair[1])
    pair[1].write_text("gone\n")
    with pytest.raises(ConfigError, match=r"TLS files at start: tls\.key_file: .* no PEM"):
        run_server(config)
