"""An upstream password never shows: not in logs (debug included), /metrics, /status.json,
the status page, nor any error a client gets, however the upstream or its token server fails.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from tests.fast.conftest import ProxyFactory, blob_path
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import FakeRegistry, TokenAuth
from tests.support.inproxy import Answer, InProcessRegcache

USER, SECRET = "alice", "Pa55-wrd-that-must-not-leak"
FORMS = (SECRET, base64.b64encode(f"{USER}:{SECRET}".encode()).decode())
TAG = "/v2/library/app/manifests/1.0"

Scenario = Callable[[FakeRegistry], None]


def token_server_fails(registry: FakeRegistry) -> None:
    registry.faults.append(Fault(path="/token", status=500))


def token_server_refuses(registry: FakeRegistry) -> None:
    registry.faults.append(Fault(path="/token", status=401))


def registry_fails(registry: FakeRegistry) -> None:
    registry.faults.append(Fault(path=r"/v2/.+", status=503))


def registry_refuses(registry: FakeRegistry) -> None:
    registry.faults.append(Fault(path=r"/v2/.+", status=401, headers=_BASIC))


def redirect_refused(registry: FakeRegistry) -> None:
    registry.faults.append(
        Fault(path=r"/v2/.*/blobs/.*", location="http://10.0.0.1/b?X-Amz-Signature=x")
    )


def healthy(registry: FakeRegistry) -> None:
    pass


_BASIC = {"WWW-Authenticate": 'Basic realm="fake"'}


@pytest.fixture
async def secured(request: pytest.FixtureRequest) -> AsyncIterator[FakeRegistry]:
    if request.param == "basic":
        fake = FakeRegistry(basic=(USER, SECRET))
    else:
        fake = FakeRegistry(token=TokenAuth(users={USER: SECRET}, anonymous=False))
    async with fake:
        yield fake


async def everything_shown(regcache: InProcessRegcache, digest: str) -> list[Answer]:
    answers = [await regcache.get(TAG), await regcache.get(blob_path(digest))]
    answers.append(await regcache.head(TAG))
    answers.append(await regcache.get("/v2/library/app/tags/list"))
    for path in ("/metrics", "/status.json", "/", "/readyz"):
        answers.append(await regcache.get(path))
    return answers


SCENARIOS = [
    ("token", token_server_fails),
    ("token", token_server_refuses),
    *[
        (auth, scenario)
        for auth in ("basic", "token")
        for scenario in (registry_fails, registry_refuses, redirect_refused, healthy)
    ],
]


@pytest.mark.parametrize(
    ("secured", "scenario"),
    SCENARIOS,
    indirect=["secured"],
    ids=[f"{auth}-{scenario.__name__}" for auth, scenario in SCENARIOS],
)
async def test_the_password_never_shows(
    make_proxy: ProxyFactory,
    secured: FakeRegistry,
    scenario: Scenario,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    image = secured.push_image("library/app", "1.0")
    scenario(secured)
    regcache = await make_proxy(url=secured.url, username=USER, password=SECRET)
    answers = await everything_shown(regcache, image.layer_digests[0])
    failed = any(answer.status >= 400 for answer in answers[:2])
    assert failed is (scenario is not healthy)
    shown = "\n".join(
        [answer.body.decode(errors="replace") for answer in answers]
        + [str(dict(answer.headers)) for answer in answers]
        + [record.getMessage() for record in caplog.records]
        + [str(record.args) for record in caplog.records]
        + [caplog.text]
    )
    for form in FORMS:
        assert form not in shown
