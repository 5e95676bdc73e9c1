"""The rest of the HTTP surface: the base endpoint, tag lists, probes, metrics, the status page."""

from __future__ import annotations

import pytest

from tests.fast.conftest import ProxyFactory, blob_path, stall_once
from tests.support.fakefaults import Fault
from tests.support.fakeregistry import OCI_MANIFEST, FakeImage, FakeRegistry
from tests.support.inproxy import InProcessRegcache
from tests.support.regcache import CORE_METRICS

TAG = "/v2/library/app/manifests/1.0"


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
async def test_base_endpoint(regcache: InProcessRegcache, path: str) -> None:
    answer = await regcache.get(path)
    assert answer.status == 200
    assert answer.json() == {}
    assert answer.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.fixture
def tagged(registry: FakeRegistry, image: FakeImage) -> list[str]:
    tags = ["1.0", "1.1", "2.0", "latest"]
    for tag in tags:
        registry.add_manifest("library/app", image.manifest, OCI_MANIFEST, tag)
    return tags


async def test_tag_lists_pass_through_uncached(
    regcache: InProcessRegcache, registry: FakeRegistry, tagged: list[str]
) -> None:
    for _ in range(2):
        answer = await regcache.get("/v2/app/tags/list")
        assert answer.status == 200
        assert answer.json() == {"name": "library/app", "tags": tagged}
        assert "Link" not in answer.headers
    assert registry.count("GET", "/v2/library/app/tags/list") == 2
    last = await regcache.get("/v2/library/app/tags/list?last=2.0")
    assert last.json()["tags"] == ["latest"]


@pytest.mark.parametrize(
    ("client_path", "link"),
    [
        ("/v2/app/tags/list?n=2", '</v2/app/tags/list?last=1.1&n=2>; rel="next"'),
        (
            "/v2/hub/library/app/tags/list?n=2",
            '</v2/hub/library/app/tags/list?last=1.1&n=2>; rel="next"',
        ),
        (
            "/v2/library/app/tags/list?n=2&ns=docker.io",
            '</v2/library/app/tags/list?last=1.1&n=2&ns=docker.io>; rel="next"',
        ),
    ],
)
async def test_tag_list_pages_link_to_the_name_the_client_used(
    make_proxy: ProxyFactory, tagged: list[str], client_path: str, link: str
) -> None:
    regcache = await make_proxy(aliases=("hub",))
    page = await regcache.get(client_path)
    assert page.json()["tags"] == ["1.0", "1.1"]
    assert page.headers["Link"] == link
    following = link[1 : link.index(">")]
    assert (await regcache.get(following)).json()["tags"] == ["2.0", "latest"]


async def test_requests_to_an_upstream_on_another_host_name_the_registry(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    # A chained regcache routes by this ns=, as a mirror does containerd's.
    regcache = await make_proxy()
    assert (await regcache.get(TAG)).status == 200
    assert [seen.query for seen in registry.seen] == ["ns=docker.io"]


async def test_requests_to_a_registrys_own_host_carry_no_ns(
    make_proxy: ProxyFactory, registry: FakeRegistry, image: FakeImage
) -> None:
    regcache = await make_proxy(name=f"127.0.0.1:{registry.port}")
    assert (await regcache.get("/v2/library/app/tags/list?n=1")).status == 200
    assert [seen.query for seen in registry.seen] == ["n=1"]


async def test_health_and_readiness(regcache: InProcessRegcache) -> None:
    assert (await regcache.get("/healthz")).status == 200
    assert (await regcache.get("/readyz")).status == 200
    tmp = regcache.config.cache_dir / "tmp"
    tmp.rename(regcache.config.cache_dir / "gone")
    tmp.write_text("not a directory")
    not_ready = await regcache.get("/readyz")
    assert not_ready.status == 503
    assert b"not writable" in not_ready.body
    assert (await regcache.get("/healthz")).status == 200


async def test_metrics_are_prometheus_text_with_every_family(
    regcache: InProcessRegcache, image: FakeImage
) -> None:
    assert (await regcache.get(TAG)).status == 200
    answer = await regcache.get("/metrics")
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = answer.body.decode()
    for name in CORE_METRICS:
        assert name in text, name
    assert await regcache.metric("regcache_upstream_requests_total", method="GET") == 1


@pytest.mark.parametrize(("header", "gauge"), [("76;w=21600", 76.0), ("junk", 0.0)])
async def test_docker_hubs_rate_limit_header_is_a_gauge(
    regcache: InProcessRegcache,
    registry: FakeRegistry,
    image: FakeImage,
    header: str,
    gauge: float,
) -> None:
    registry.faults.append(Fault(headers={"ratelimit-remaining": header}))
    assert (await regcache.get(TAG)).status == 200
    remaining = await regcache.metric("regcache_upstream_ratelimit_remaining", upstream="docker.io")
    assert remaining == gauge


async def test_status_page_and_its_json(
    regcache: InProcessRegcache, registry: FakeRegistry, image: FakeImage
) -> None:
    page = await regcache.get("/")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    for _ in range(3):
        assert (await regcache.get(TAG, {"Accept": OCI_MANIFEST})).status == 200
    digest = image.layer_digests[1]
    registry.faults.append(stall_once(digest, seconds=1.0))
    async with regcache.client.get(blob_path(digest)) as downloading:
        await downloading.content.readexactly(1024)
        status = await regcache.get("/status.json")
        assert status.headers["Cache-Control"] == "no-store"
        document = status.json()
        [inflight] = document["inflight"]
        assert inflight["digest"] == digest
        assert inflight["size"] == len(image.layers[1])
        assert 0 < inflight["received"] < len(image.layers[1])
        await downloading.read()
    assert document["top_images"] == [
        {"upstream": "docker.io", "repository": "library/app", "pulls": 3}
    ]
    assert document["requests"]["miss"] == 2  # the manifest, the blob
    assert document["requests"]["hit"] == 2
    assert document["requests"]["hit_ratio"] == 0.5
    [upstream] = document["upstreams"]
    assert upstream["name"] == "docker.io"
    assert upstream["healthy"] is True
    assert upstream["last_status"] == 200
    assert document["history"], "sampled at start"


async def test_status_json_shows_a_failing_upstream(
    regcache: InProcessRegcache, registry: FakeRegistry
) -> None:
    assert (await regcache.get("/status.json")).json()["upstreams"][0]["healthy"] is None
    registry.faults.append(Fault(status=500))
    assert (await regcache.get(TAG)).status == 503
    [upstream] = (await regcache.get("/status.json")).json()["upstreams"]
    assert upstream["healthy"] is False
    assert upstream["last_error"] == "HTTP 500"
    await registry.stop()
    assert (await regcache.get(TAG)).status == 503
    [upstream] = (await regcache.get("/status.json")).json()["upstreams"]
    assert upstream["healthy"] is False
    assert upstream["last_error"] != "HTTP 500"  # the connection failure, in the OS's words
