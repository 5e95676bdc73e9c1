"""Client-visible errors: OCI error codes, HTTP statuses and the JSON body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import test_utils, web
from hypothesis import given
from hypothesis import strategies as st

from proxy.errors import (
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    RangeInvalid,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    Unsupported,
    UpstreamError,
    UpstreamInvalid,
    UpstreamUnavailable,
)
from proxy.server.middleware import API_VERSION_HEADER, error_middleware, render

if TYPE_CHECKING:
    Client = test_utils.TestClient[web.Request, web.Application]

ERRORS: list[tuple[type[RegistryError], str, int]] = [
    (RegistryError, "UNKNOWN", 500),
    (NameInvalid, "NAME_INVALID", 400),
    (NameUnknown, "NAME_UNKNOWN", 404),
    (DigestInvalid, "DIGEST_INVALID", 400),
    (ManifestUnknown, "MANIFEST_UNKNOWN", 404),
    (BlobUnknown, "BLOB_UNKNOWN", 404),
    (RangeInvalid, "RANGE_INVALID", 416),
    (Unsupported, "UNSUPPORTED", 405),
    (Unauthorized, "UNAUTHORIZED", 401),
    (Denied, "DENIED", 403),
    (TooManyRequests, "TOOMANYREQUESTS", 429),
    (UpstreamError, "UNAVAILABLE", 503),
    (UpstreamUnavailable, "UNAVAILABLE", 503),
    (UpstreamInvalid, "UNKNOWN", 502),
]
ERROR_CLASSES = [cls for cls, _, _ in ERRORS]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@pytest.mark.parametrize(("cls", "code", "status"), ERRORS)
def test_codes_and_statuses(cls: type[RegistryError], code: str, status: int) -> None:
    error = cls()
    assert error.error_code == code
    assert error.http_status == status
    assert error.message == cls.default_message
    assert str(error) == cls.default_message
    assert error.headers == {}
    assert error.to_json() == {"errors": [{"code": code, "message": cls.default_message}]}


@pytest.mark.parametrize("cls", ERROR_CLASSES)
def test_all_are_registry_errors(cls: type[RegistryError]) -> None:
    assert issubclass(cls, RegistryError)
    assert issubclass(cls, Exception)


def test_upstream_faults_are_upstream_errors() -> None:
    assert issubclass(UpstreamUnavailable, UpstreamError)
    assert issubclass(UpstreamInvalid, UpstreamError)
    assert not issubclass(ManifestUnknown, UpstreamError)


def test_message_and_detail() -> None:
    error = ManifestUnknown("no such tag", detail={"tag": "latest"})
    assert str(error) == "no such tag"
    assert error.to_json() == {
        "errors": [
            {"code": "MANIFEST_UNKNOWN", "message": "no such tag", "detail": {"tag": "latest"}}
        ]
    }


@pytest.mark.parametrize("detail", [0, "", [], {}, False])
def test_falsy_detail_is_kept(detail: Any) -> None:
    assert RegistryError(detail=detail).to_json()["errors"][0]["detail"] == detail


def test_empty_message_falls_back_to_the_default() -> None:
    assert Denied("").message == Denied.default_message


def test_overrides_for_passed_through_upstream_answers() -> None:
    error = Unsupported("nope", status=404, code="NOT_FOUND", headers={"Retry-After": "5"})
    assert error.http_status == 404
    assert error.error_code == "NOT_FOUND"
    assert error.headers == {"Retry-After": "5"}
    # The class attributes stay as they were.
    assert Unsupported.status == 405
    assert Unsupported.code == "UNSUPPORTED"
    assert Unsupported().http_status == 405


def test_headers_are_not_shared_between_errors() -> None:
    first, second = NameUnknown(), NameUnknown()
    first.headers["OCI-Namespace"] = "ghcr.io"
    assert second.headers == {}


@given(
    st.sampled_from(ERROR_CLASSES),
    st.text(),
    json_values,
)
def test_json_shape(cls: type[RegistryError], message: str, detail: Any) -> None:
    body = cls(message, detail).to_json()
    assert list(body) == ["errors"]
    [error] = body["errors"]
    assert set(error) <= {"code", "message", "detail"}
    assert {"code", "message"} <= set(error)
    assert error["code"] == cls.code
    assert error["message"] == (message or cls.default_message)
    assert error.get("detail") == detail
    assert ("detail" in error) == (detail is not None)
    assert json.loads(json.dumps(body)) == body


# --- rendering ------------------------------------------------------------------------


def test_render() -> None:
    response = render(TooManyRequests("slow down", headers={"Retry-After": "30"}))
    assert response.status == 429
    assert response.headers["Retry-After"] == "30"
    assert response.headers[API_VERSION_HEADER[0]] == API_VERSION_HEADER[1]
    assert response.content_type == "application/json"
    assert response.text is not None
    assert json.loads(response.text) == {
        "errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]
    }


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    def raising(exc: BaseException) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            raise exc

        return handler

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/name-unknown", raising(NameUnknown("no upstream", detail={"ns": "x"})))
    app.router.add_get("/upstream", raising(UpstreamUnavailable("upstream down")))
    app.router.add_get("/bug", raising(RuntimeError("secret /internal/path")))
    app.router.add_get("/ok", raising(web.HTTPFound("/elsewhere")))
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        yield client


async def test_middleware_renders_registry_errors(client: Client) -> None:
    response = await client.get("/name-unknown")
    assert response.status == 404
    assert response.headers[API_VERSION_HEADER[0]] == API_VERSION_HEADER[1]
    assert await response.json() == {
        "errors": [{"code": "NAME_UNKNOWN", "message": "no upstream", "detail": {"ns": "x"}}]
    }
    response = await client.get("/upstream")
    assert response.status == 503
    assert (await response.json())["errors"][0]["code"] == "UNAVAILABLE"


async def test_middleware_hides_unexpected_exceptions(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/bug")
    assert response.status == 500
    text = await response.text()
    assert "secret" not in text
    assert "Traceback" not in text
    assert json.loads(text)["errors"][0]["code"] == "UNKNOWN"
    assert "unexpected error" in caplog.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, "UNSUPPORTED"), ("DELETE", "/ok", 405, "UNSUPPORTED")],
)
async def test_middleware_renders_aiohttp_refusals(
    client: Client, method: str, path: str, status: int, code: str
) -> None:
    response = await client.request(method, path)
    assert response.status == status
    assert (await response.json())["errors"][0]["code"] == code


async def test_middleware_lets_redirects_through(client: Client) -> None:
    response = await client.get("/ok", allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere"
