"""No cross-repository reads: cached content is served for a repository that references it.

A digest names bytes, not who may read them: a layer cached for a private repository must
not reach a client that names it under another repository, or another upstream, that does
not hold it. So content is served for an (upstream, repository) only when that pair is known
to reference it (see ``Usage.known``: learned from a manifest pulled for it, from a tag the
upstream resolved for it, from a download or a confirmation made for it), or once the
upstream confirms it with a HEAD in that repository. A 404, 401 or 403 there is the client's
answer, as for content regcache never cached.
"""

from __future__ import annotations

from proxy.cache.singleflight import SingleFlight
from proxy.cache.upstreams import client_for
from proxy.cache.usage import Usage
from proxy.errors import ManifestUnknown
from proxy.model import Descriptor, Kind
from proxy.oci.digest import Digest
from proxy.oci.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
)
from proxy.routing import Target
from proxy.upstream.client import UpstreamClient

# A HEAD by digest names the content already; every manifest type, so no upstream refuses it
# for an Accept list that lacks its type.
MANIFEST_TYPES = (
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
)


class References:
    """The one place that asks an upstream whether a repository holds content."""

    def __init__(self, clients: dict[str, UpstreamClient], usage: Usage) -> None:
        self._clients = clients
        self._usage = usage
        self._asking: SingleFlight[Descriptor] = SingleFlight()

    async def known(self, target: Target, kind: Kind, digest: Digest) -> bool:
        return await self._usage.known(kind, digest, target.ref)

    async def check(self, target: Target, kind: Kind, digest: Digest) -> None:
        """Return if ``target`` references the content; raise the upstream's error if not."""
        if not await self._usage.known(kind, digest, target.ref):
            await self.confirm(target, kind, digest)

    async def confirm(self, target: Target, kind: Kind, digest: Digest) -> Descriptor:
        """What the upstream says of the content in ``target``'s repository, remembered as a
        reference when it has it. Raises its error (404, 401, 403...; offline) otherwise.

        Concurrent requests for the same content and repository share one HEAD.
        """
        key = (kind, digest, target.ref)
        found, _ = await self._asking.do(key, lambda: self._ask(target, kind, digest))
        return found

    async def _ask(self, target: Target, kind: Kind, digest: Digest) -> Descriptor:
        client = client_for(self._clients, target)
        if kind is Kind.BLOB:
            # head_blob refuses an answer for another digest.
            found = await client.head_blob(target.repository, digest)
        else:
            found = await client.head_manifest(target.repository, str(digest), MANIFEST_TYPES)
            if found.digest is not None and found.digest != digest:
                raise ManifestUnknown(
                    "the upstream answered for another manifest",
                    detail={"digest": str(digest), "upstream": str(found.digest)},
                )
        if self._usage.learn(kind, digest, target.ref):
            await self._usage.publish([(kind, digest, target.ref)])
        return found
