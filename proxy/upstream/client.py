"""One upstream registry's distribution API, spoken in its own terms.

Each method is one registry operation: it sends the request, checks the status, reads
and verifies what the answer promises, and raises a RegistryError for anything else.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import aiohttp

from proxy.config import UpstreamConfig
from proxy.errors import UpstreamInvalid
from proxy.metrics import Metrics
from proxy.model import Credentials, Descriptor, Kind, StoredManifest
from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.mediatypes import MAX_MANIFEST_BYTES
from proxy.upstream.blobstream import OCTET_STREAM, BlobStream
from proxy.upstream.body import read_at_most
from proxy.upstream.failures import TRANSPORT_ERRORS, error_from, unavailable
from proxy.upstream.health import UpstreamHealth
from proxy.upstream.transport import Transport, api_path
from proxy.upstream.transport import namespace_for as namespace_for

MAX_TAG_LIST_BYTES = 16 * 1024 * 1024
DEFAULT_TAG_LIST_TYPE = "application/json"
# Passthrough identities kept with their tokens; the least recently used go first.
MAX_ACTING_CLIENTS = 1024


@dataclass(frozen=True, slots=True)
class TagList:
    """The upstream's answer, passed on as it is; ``link`` points at the next page."""

    body: bytes
    content_type: str
    link: str | None


class UpstreamClient:
    def __init__(
        self,
        upstream: UpstreamConfig,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        offline: bool = False,
        transport: Transport | None = None,
    ) -> None:
        self.upstream = upstream
        self._session = session
        self._metrics = metrics
        self._transport = transport or Transport(upstream, session, metrics, offline=offline)
        self._acting: OrderedDict[Credentials | None, UpstreamClient] = OrderedDict()

    def acting_for(self, credentials: Credentials | None) -> UpstreamClient:
        """This upstream as a passthrough client sees it: its credentials or none, never
        regcache's. One client per identity, so tokens are cached per identity too."""
        client = self._acting.get(credentials)
        if client is None:
            transport = self._transport.acting_for(credentials)
            client = UpstreamClient(
                self.upstream, self._session, self._metrics, transport=transport
            )
            self._acting[credentials] = client
            if len(self._acting) > MAX_ACTING_CLIENTS:
                self._acting.popitem(last=False)
        else:
            self._acting.move_to_end(credentials)
        return client

    @property
    def health(self) -> UpstreamHealth:
        return self._transport.health

    async def ping(self) -> None:
        """Raises unless the upstream answers ``GET /v2/`` (with our credentials) with 200."""
        response = await self._expect_ok("GET", api_path(None), None, None)
        response.release()

    async def head_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...]
    ) -> Descriptor:
        """What ``reference`` is now, without its body; a HEAD costs no Docker Hub pull."""
        path = api_path(repository, f"manifests/{reference}")
        response = await self._expect_ok("HEAD", path, repository, Kind.MANIFEST, accept)
        response.release()
        headers = response.headers
        try:
            size: int | None = int(headers.get("Content-Length", ""))
        except ValueError:
            size = None
        media_type = headers.get("Content-Type", OCTET_STREAM)
        return Descriptor(_claimed_digest(headers.get("Docker-Content-Digest")), media_type, size)

    async def get_manifest(
        self,
        repository: str,
        reference: str,
        accept: tuple[str, ...],
        expected_digest: Digest | None = None,
    ) -> StoredManifest:
        """The manifest, its body checked against ``expected_digest`` and the upstream's claim.

        Its descriptor is (digest, media type without parameters, length of the body).
        """
        path = api_path(repository, f"manifests/{reference}")
        response = await self._expect_ok("GET", path, repository, Kind.MANIFEST, accept)
        try:
            declared = response.content_length
            if declared is not None and declared > MAX_MANIFEST_BYTES:
                raise UpstreamInvalid(
                    "upstream manifest is larger than 4 MiB", detail={"size": declared}
                )
            body = await self._read(response, MAX_MANIFEST_BYTES)
        finally:
            response.release()
        if len(body) > MAX_MANIFEST_BYTES:
            raise UpstreamInvalid("upstream manifest is larger than 4 MiB")
        return self._verified(response, body, expected_digest)

    async def head_blob(self, repository: str, digest: Digest) -> Descriptor:
        """The blob's size as the upstream states it, None if it does not."""
        path = api_path(repository, f"blobs/{digest}")
        response = await self._expect_ok("HEAD", path, repository, Kind.BLOB)
        response.release()
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed is not None and claimed != str(digest):
            self._metrics.digest_mismatch.labels(self.upstream.name, "blob").inc()
            raise UpstreamInvalid("upstream answered for another digest", detail=claimed)
        media_type = response.headers.get("Content-Type", OCTET_STREAM)
        return Descriptor(digest, media_type, response.content_length)

    def open_blob(self, repository: str, digest: Digest, offset: int = 0) -> BlobStream:
        """The blob's bytes from ``offset``: ``async with`` it, then iterate its chunks.

        The bytes are not verified here: the digest covers the whole blob, which only the
        reader ever sees.
        """
        return BlobStream(self._transport, repository, digest, offset, self._metrics)

    async def list_tags(
        self, repository: str, n: str | None = None, last: str | None = None
    ) -> TagList:
        """One page of tags. ``n`` and ``last`` go upstream as the client sent them."""
        query = {key: value for key, value in (("n", n), ("last", last)) if value is not None}
        path = api_path(repository, "tags/list", query)
        response = await self._expect_ok("GET", path, repository, None)
        try:
            body = await self._read(response, MAX_TAG_LIST_BYTES)
        finally:
            response.release()
        if len(body) > MAX_TAG_LIST_BYTES:
            raise UpstreamInvalid("upstream tag list is larger than 16 MiB")
        headers = response.headers
        content_type = headers.get("Content-Type", DEFAULT_TAG_LIST_TYPE)
        return TagList(body, content_type, headers.get("Link") or None)

    async def _expect_ok(
        self,
        method: str,
        path: str,
        repository: str | None,
        kind: Kind | None,
        accept: tuple[str, ...] = (),
    ) -> aiohttp.ClientResponse:
        """A 200 answer, which the caller must release; any other status raises."""
        headers = [("Accept", media_type) for media_type in accept]
        response = await self._transport.request(method, path, repository, headers)
        if response.status != 200:
            raise await error_from(response, kind)
        return response

    async def _read(self, response: aiohttp.ClientResponse, limit: int) -> bytes:
        try:
            return await read_at_most(response, limit)
        except TRANSPORT_ERRORS as exc:
            raise unavailable(exc, f"upstream {self.upstream.name} broke off its answer") from exc

    def _verified(
        self, response: aiohttp.ClientResponse, body: bytes, expected: Digest | None
    ) -> StoredManifest:
        header = response.headers.get("Docker-Content-Digest")
        claimed = _claimed_digest(header)
        digest = expected or claimed or Digest.of(body)
        if (claimed is not None and claimed != digest) or not digest.matches(body):
            self._metrics.digest_mismatch.labels(self.upstream.name, "manifest").inc()
            raise UpstreamInvalid(
                "upstream manifest does not match its digest",
                detail={
                    "expected": str(digest),
                    "header": header,
                    "actual": str(Digest.of(body, digest.algorithm)),
                },
            )
        media_type = response.headers.get("Content-Type", OCTET_STREAM)
        return StoredManifest(digest, media_type.split(";")[0].strip(), body)


def _claimed_digest(header: str | None) -> Digest | None:
    """The upstream's Docker-Content-Digest, if it sent one regcache can verify."""
    try:
        return Digest.parse(header) if header else None
    except InvalidDigest:
        return None
