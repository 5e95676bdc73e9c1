"""Upstreams that answer garbage: oversized manifests, broken token servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiohttp import web

from tests.conftest import RegcacheFactory
from tests.support.threadedapp import ThreadedApp

FIVE_MIB = 5 * 1024 * 1024


def fake_registry() -> web.Application:
    """Serves one oversized manifest, with and without a declared length."""

    async def manifest(request: web.Request) -> web.StreamResponse:
        body = b'{"pad":"' + b"x" * FIVE_MIB + b'"}'
        if request.match_info["name"] == "declared":
            return web.Response(
                body=body, content_type="application/vnd.oci.image.manifest.v1+json"
            )
        response = web.StreamResponse()
        response.content_type = "application/vnd.oci.image.manifest.v1+json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 64 * 1024):
            await response.write(body[start : start + 64 * 1024])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v2/library/{name}/manifests/{ref}", manifest)
    return app


def fake_token_registry(token_body: bytes) -> tuple[web.Application, list[str]]:
    """A registry that wants a Bearer token from a realm that answers ``token_body``."""
    seen: list[str] = []

    async def registry(request: web.Request) -> web.Response:
        seen.append(request.path)
        realm = f"http://{request.host}/token"
        challenge = f'Bearer realm="{realm}",service="fake",scope="repository:library/x:pull"'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    async def token(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=token_body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/token", token)
    app.router.add_get("/v2/{tail:.*}", registry)
    return app, seen


@pytest.fixture
def oversized() -> Iterator[ThreadedApp]:
    with ThreadedApp(fake_registry()) as server:
        yield server


@pytest.mark.parametrize("name", ["declared", "chunked"])
def test_manifest_over_4_mib_is_refused(
    oversized: ThreadedApp, regcache_factory: RegcacheFactory, name: str
) -> None:
    proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": oversized.url}]})
    response = proxy.get(f"/v2/library/{name}/manifests/1.0")
    assert response.status == 502
    error = response.json()["errors"][0]
    assert error["code"] == "UNKNOWN"
    assert "4 MiB" in error["message"]
    assert "Traceback" not in proxy.log_text()


@pytest.mark.parametrize(
    "token_body",
    [b"<html>not json</html>", b'{"expires_in": 300}', b'{"token": 42}', b"[1, 2, 3]", b""],
)
def test_token_server_answering_garbage_is_a_clean_502(
    regcache_factory: RegcacheFactory, token_body: bytes
) -> None:
    app, seen = fake_token_registry(token_body)
    with ThreadedApp(app) as server:
        proxy = regcache_factory({"upstreams": [{"name": "docker.io", "url": server.url}]})
        response = proxy.get("/v2/library/x/manifests/1.0")
    assert response.status == 502
    assert response.json()["errors"][0]["code"] == "UNKNOWN"
    assert "/token" in seen
    assert "Traceback" not in proxy.log_text()
