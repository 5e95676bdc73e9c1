"""The lease names under which the replicas of a fleet share manifest work: one per local
single flight, so that what one process does once the fleet does once."""

from __future__ import annotations

from proxy.cache.manifests import _lease_name
from proxy.config import UpstreamConfig
from proxy.routing import Target

DIGEST = "sha256:" + "ab" * 32
APP = Target(UpstreamConfig("docker.io", "http://127.0.0.1:9"), "library/app")
OCI = ("application/vnd.oci.image.manifest.v1+json",)
DOCKER = ("application/vnd.docker.distribution.manifest.v2+json",)


def test_a_tag_has_a_lease_per_accept_list() -> None:
    # The upstream may answer another manifest (an index, a single platform) to another list.
    name = _lease_name(APP, "1.0", OCI)
    assert name.startswith("manifest:docker.io/library/app:1.0:")
    assert name == _lease_name(APP, "1.0", OCI)
    assert name != _lease_name(APP, "1.0", DOCKER)
    assert name != _lease_name(APP, "1.0", (OCI[0], DOCKER[0]))
    assert _lease_name(APP, "1.0", ("a", "b")) != _lease_name(APP, "1.0", ("a,b",))


def test_a_digest_has_one_lease_whatever_the_accept_list() -> None:
    # A manifest by digest is served from the index to any client once stored.
    assert _lease_name(APP, DIGEST, OCI) == _lease_name(APP, DIGEST, DOCKER)
    assert _lease_name(APP, DIGEST, OCI) == f"manifest:docker.io/library/app:{DIGEST}"


def test_repositories_and_upstreams_have_leases_of_their_own() -> None:
    other = Target(UpstreamConfig("ghcr.io", "http://127.0.0.1:9"), "library/app")
    names = {
        _lease_name(APP, "1.0", OCI),
        _lease_name(Target(APP.upstream, "library/other"), "1.0", OCI),
        _lease_name(other, "1.0", OCI),
    }
    assert len(names) == 3
