"""An edge regcache whose upstreams are a central regcache, as at a branch office.

The edge names the central cache as the URL of both docker.io and ghcr.io; it tells the
central cache which registry it wants with ``?ns=`` (as containerd tells a mirror), so every
routing form a client may use at the edge reaches the right registry behind the central cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from proxy.config import UpstreamConfig
from proxy.upstream.client import namespace_for
from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.containerd import Containerd, write_hosts_dir
from tests.support.images import OCI_INDEX, OCI_MANIFEST
from tests.support.regcache import RegcacheProcess, upstream_entry
from tests.support.runtimes import access_mark, regcache_requests, v2_requests, with_json_logs
from tests.support.threadedapp import ThreadedApp
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.runtimes

OCI_ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}


@pytest.mark.parametrize(
    ("name", "url", "told"),
    [
        ("docker.io", "https://registry-1.docker.io", None),
        ("docker.io", "https://index.docker.io", None),
        ("ghcr.io", "https://ghcr.io", None),
        ("ghcr.io", "https://GHCR.io:443", None),
        ("registry.example.com:5000", "http://registry.example.com:5000", None),
        ("ghcr.io", "http://central.example.com:5000", "ghcr.io"),
        ("docker.io", "http://127.0.0.1:5000", "docker.io"),
    ],
)
def test_only_an_upstream_on_another_host_is_told_the_registry(
    name: str, url: str, told: str | None
) -> None:
    assert namespace_for(UpstreamConfig(name=name, url=url)) == told


@dataclass(frozen=True)
class Chain:
    central: RegcacheProcess
    edge: RegcacheProcess


def chain_of(factory: RegcacheFactory, hub_url: str, ghcr_url: str) -> Chain:
    central = factory(
        with_json_logs(
            {
                "default_upstream": "docker.io",
                "upstreams": [
                    upstream_entry("docker.io", hub_url),
                    upstream_entry("ghcr.io", ghcr_url),
                ],
            }
        )
    )
    edge = factory(
        with_json_logs(
            {
                "default_upstream": "docker.io",
                "upstreams": [
                    upstream_entry("docker.io", central.url),
                    upstream_entry("ghcr.io", central.url),
                ],
            }
        )
    )
    return Chain(central, edge)


@pytest.fixture
def chain(
    upstream: Upstream, second_upstream: Upstream, regcache_factory: RegcacheFactory
) -> Chain:
    return chain_of(regcache_factory, upstream.url, second_upstream.url)


def from_edge(chain: Chain, since: int) -> list[str]:
    """What the central cache was asked by the edge."""
    return v2_requests(regcache_requests(chain.central, since, agent="aiohttp"))


def test_skopeo_default_and_path_prefix_forms_through_the_edge(
    chain: Chain, upstream: Upstream, second_upstream: Upstream, tmp_path: Path
) -> None:
    mark = access_mark(chain.central)
    app = skopeo.pull(chain.edge.ref("org/app", "1.0"), tmp_path / "app")
    tool = skopeo.pull(chain.edge.ref("ghcr.io/org/tool", "2.0"), tmp_path / "tool")

    assert app.manifest == upstream.images.app.manifest
    assert tool.manifest == second_upstream.images.tool.manifest
    for digest in second_upstream.images.tool.blob_digests:
        assert tool.blob(digest) == second_upstream.images.tool.blob(digest)
    asked = from_edge(chain, mark)
    print("central cache, asked by the edge:", *asked, sep="\n  ")
    assert "GET /v2/org/app/manifests/1.0?ns=docker.io" in asked
    assert "GET /v2/org/tool/manifests/2.0?ns=ghcr.io" in asked
    assert all(line.endswith(("?ns=docker.io", "?ns=ghcr.io")) for line in asked)


def test_containerd_ns_form_through_the_edge(
    chain: Chain,
    containerd: Containerd,
    ctr_ns: str,
    second_upstream: Upstream,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    hosts = write_hosts_dir(tmp_path / "certs.d", chain.edge.host, ("docker.io", "ghcr.io"))
    tool, small = second_upstream.images.tool, upstream.images.small
    upstream_mark = second_upstream.registry.mark()

    pulled = containerd.pull(ctr_ns, "ghcr.io/org/tool:2.0", hosts)
    hub = containerd.pull(ctr_ns, "docker.io/library/small:1.0", hosts)

    assert pulled.digest == tool.manifest_digest
    assert hub.digest == small.manifest_digest
    assert containerd.unpacked(ctr_ns, tool.diff_ids)
    assert containerd.unpacked(ctr_ns, small.diff_ids)
    at_edge = regcache_requests(chain.edge, agent="containerd/")
    assert {e.query for e in at_edge} == {"ns=ghcr.io", "ns=docker.io"}
    for digest in tool.blob_digests:
        assert second_upstream.registry.blob_gets(digest, since=upstream_mark) == 1


def test_heads_through_the_chain_in_every_form(
    chain: Chain, upstream: Upstream, second_upstream: Upstream
) -> None:
    small, tool = upstream.images.small, second_upstream.images.tool
    hub_mark, ghcr_mark = upstream.registry.mark(), second_upstream.registry.mark()
    blob_heads = {
        f"/v2/library/small/blobs/{small.layer_digests[0]}": small.layer_sizes[0],  # default
        f"/v2/ghcr.io/org/tool/blobs/{tool.layer_digests[0]}": tool.layer_sizes[0],  # prefix
        f"/v2/org/tool/blobs/{tool.layer_digests[1]}?ns=ghcr.io": tool.layer_sizes[1],  # ns
    }
    for path, size in blob_heads.items():
        response = chain.edge.request("HEAD", path)
        assert response.status == 200, path
        assert int(response.headers["Content-Length"]) == size
        assert path.split("/blobs/")[1].startswith(response.headers["Docker-Content-Digest"])
    manifest_heads = {
        "/v2/small/manifests/1.0": small.manifest_digest,
        "/v2/ghcr.io/org/tool/manifests/2.0": tool.manifest_digest,
        "/v2/org/tool/manifests/2.0?ns=ghcr.io": tool.manifest_digest,
    }
    for path, digest in manifest_heads.items():
        response = chain.edge.request("HEAD", path, OCI_ACCEPT)
        assert response.status == 200, path
        assert response.headers["Docker-Content-Digest"] == digest
    # A HEAD downloads nothing, at either cache.
    assert upstream.registry.blob_gets(since=hub_mark) == 0
    assert second_upstream.registry.blob_gets(since=ghcr_mark) == 0


@pytest.fixture
def paginating_registry() -> Iterator[ThreadedApp]:
    """Tag lists one tag a page, with a Link to the next page (Distribution 2.8 ignores ``n``)."""
    tags = ["2.0", "2.1", "2.2"]

    async def tags_list(request: web.Request) -> web.Response:
        last = request.query.get("last")
        start = tags.index(last) + 1 if last else 0
        page = tags[start : start + 1]
        headers = {}
        if start + 1 < len(tags):
            # Like registries that keep the query they were sent, ns included.
            query = {**request.query, "last": page[-1], "n": "1"}
            link = request.rel_url.with_query(query)
            headers["Link"] = f'<{link}>; rel="next"'
        return web.json_response({"name": "org/tool", "tags": page}, headers=headers)

    app = web.Application()
    app.router.add_get("/v2/org/tool/tags/list", tags_list)
    server = ThreadedApp(app)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    "first_page", ["/v2/ghcr.io/org/tool/tags/list?n=1", "/v2/org/tool/tags/list?n=1&ns=ghcr.io"]
)
def test_tag_list_pages_through_the_chain(
    first_page: str,
    paginating_registry: ThreadedApp,
    upstream: Upstream,
    regcache_factory: RegcacheFactory,
) -> None:
    chain = chain_of(regcache_factory, upstream.url, paginating_registry.url)
    pages, path = [], first_page
    while path:
        response = chain.edge.get(path)
        assert response.status == 200, path
        pages.append(response.json()["tags"])
        link = response.headers.get("Link")
        path = link.split(">", 1)[0].lstrip("<") if link else ""
        if path:
            # The next page is named the way the client named the first one.
            assert path.startswith(first_page.split("/tags/")[0] + "/tags/list?")
            assert path.count("ns=") == first_page.count("ns=")
    assert pages == [["2.0"], ["2.1"], ["2.2"]]
