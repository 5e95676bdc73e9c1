"""The distribution API's pull endpoints: route, resolve, then stream the answer."""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field, replace

from aiohttp import web
from prometheus_client import Counter

from proxy.auth.gate import Gate
from proxy.auth.gate import Target as AccessTarget
from proxy.cache.blobs import BlobCache
from proxy.cache.manifests import ManifestCache
from proxy.cache.passthrough import Passthrough
from proxy.cache.reader import OpenBlob
from proxy.cache.upstreams import client_for
from proxy.cache.usage import PullCounter
from proxy.errors import (
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    RegistryError,
    Unauthorized,
    Unsupported,
    UpstreamOffline,
)
from proxy.metrics import Metrics
from proxy.model import Kind
from proxy.oci.digest import Digest, InvalidDigest
from proxy.oci.mediatypes import accepted_types
from proxy.oci.names import InvalidName, InvalidTag
from proxy.oci.paths import UnknownEndpoint, V2Path, parse_v2_path
from proxy.oci.reference import Reference
from proxy.routing import Router, Target
from proxy.server import login
from proxy.server.accesslog import RECORD, RequestRecord
from proxy.server.ranges import byte_range
from proxy.server.sendfile import send_span
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
_PULL_METHODS = frozenset({"GET", "HEAD"})
# RFC 7234's code for a response served without the revalidation it was due.
STALE_WARNING = '110 regcache "Response is Stale"'
# Whether a manifest or blob came from the cache: how `regcache warm --server` tells what
# was already there. A HEAD says HIT only for a repository known to reference the blob.
CACHE_HEADER = "X-Cache"
# An upstream's ns= in a pagination link: the name the client used decides the upstream.
_NS_PARAM = re.compile(r"([?&])ns=[^&>]*(&?)")
_OFFLINE_MISS: dict[Kind, type[RegistryError]] = {
    Kind.MANIFEST: ManifestUnknown,
    Kind.BLOB: BlobUnknown,
    Kind.TAGS_LIST: NameUnknown,
}


@dataclass(frozen=True)
class Services:
    router: Router
    manifests: ManifestCache
    blobs: BlobCache
    clients: dict[str, UpstreamClient]
    metrics: Metrics
    pulls: PullCounter
    passthrough: Passthrough
    gate: Gate | None = None  # None: logins are off and every request is let in
    # Metric children by metric and label values: prometheus-client's labels() checks and
    # locks on every call. The label values are few (upstreams, kinds, results, sources).
    children: dict[tuple[int, tuple[str, ...]], Counter] = field(
        default_factory=dict, init=False, compare=False
    )

    def child(self, metric: Counter, *labels: str) -> Counter:
        key = (id(metric), labels)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*labels)
        return found


class V2Handlers:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = _parse(request.rel_url.raw_path)
        if request.method not in _PULL_METHODS or path.kind is Kind.BLOB_UPLOAD:
            raise Unsupported(
                "regcache is a read-only pull-through cache; push to the upstream registry",
                detail={"method": request.method},
            )
        gate = self._s.gate
        if gate is not None:
            caller = login.caller(request, _asked(request, path))
            principal = await gate.authenticate(caller, base=path.kind is Kind.BASE)
        if path.kind is Kind.BASE:
            return web.json_response({})
        target = self._s.router.route(path.name, request.query.get("ns"))
        request[RECORD] = RequestRecord(
            upstream=target.upstream.name,
            repository=target.repository,
            reference=path.reference or None,
            kind=path.kind.value,
        )
        # The one access check: after routing, so on the canonical name whatever form the
        # client used, and before anything is resolved, cached or asked of an upstream.
        passthrough = target.upstream.passthrough
        if gate is not None:
            names = AccessTarget(target.upstream.name, target.repository, path.name, passthrough)
            gate.authorize(principal, caller, names)
            if passthrough:
                target = replace(target, credentials=principal.credentials)
        try:
            if passthrough:
                await self._admit(target, path)
            if path.kind is Kind.MANIFEST:
                response = await self._manifest(request, target, path)
            elif path.kind is Kind.BLOB:
                response = await self._blob(request, target, path)
            else:
                response = await self._tags(request, target, path)
        except RegistryError as error:
            if isinstance(error, UpstreamOffline):
                error = _offline_miss(path.kind, error)
            elif passthrough and gate is not None and isinstance(error, Unauthorized | Denied):
                # On a passthrough upstream a refusal is of the client's own identity.
                error = gate.refused(principal, caller, names)
            if path.kind is not Kind.TAGS_LIST:
                self._count(request, target, path.kind.value, "error")
            error.headers.update(_namespace_header(target))
            raise error from None
        return response

    async def _admit(self, target: Target, path: V2Path) -> None:
        """The passthrough upstream's word that the client may read what it asked for;
        a tag list is asked of the upstream under the client's identity anyway."""
        if path.kind is Kind.MANIFEST:
            reference = _reference(path.reference)
        elif path.kind is Kind.BLOB:
            reference = Reference(digest=_digest(path.reference))
        else:
            return
        await self._s.passthrough.admit(target, path.kind, reference)

    async def _manifest(
        self, request: web.Request, target: Target, path: V2Path
    ) -> web.StreamResponse:
        reference = _reference(path.reference)
        accept = _accepted(tuple(request.headers.getall("Accept", ())))
        head = request.method == "HEAD"
        answer = await self._s.manifests.get(target, reference, accept, head)
        if reference.tag is not None:
            self._s.pulls.pulled(target.ref)
        self._count(request, target, "manifest", answer.result)
        headers = {
            "Docker-Content-Digest": str(answer.digest),
            "Content-Type": answer.media_type,
            CACHE_HEADER: "MISS" if answer.result == "miss" else "HIT",
            **_namespace_header(target),
        }
        if answer.result == "stale":
            headers["Warning"] = STALE_WARNING
        if answer.body is None:
            return _head_response(answer.size, headers)
        source = "upstream" if answer.result == "miss" else "cache"
        self._s.child(self._s.metrics.served_bytes, source).inc(len(answer.body))
        return web.Response(body=answer.body, headers=headers)

    async def _blob(self, request: web.Request, target: Target, path: V2Path) -> web.StreamResponse:
        digest = _digest(path.reference)
        headers = {
            "Docker-Content-Digest": str(digest),
            "Content-Type": OCTET_STREAM,
            **_namespace_header(target),
        }
        if request.method == "HEAD":
            head = await self._s.blobs.head(target, digest)
            self._count(request, target, "blob", "hit" if head.cached else "miss")
            headers[CACHE_HEADER] = "HIT" if head.cached else "MISS"
            return _head_response(head.size, headers)
        async with self._s.blobs.open(target, digest) as blob:
            self._count(request, target, "blob", "hit" if blob.hit else "miss")
            headers[CACHE_HEADER] = "HIT" if blob.hit else "MISS"
            location = await self._s.blobs.redirect_url(blob)
            if location is not None:
                # As Distribution's redirect option answers: the bytes bypass the replicas.
                return web.Response(status=307, headers={**headers, "Location": location})
            return await self._send(request, blob, headers)

    async def _send(
        self, request: web.Request, blob: OpenBlob, headers: dict[str, str]
    ) -> web.StreamResponse:
        # The digest names these bytes forever, the strongest validator there is.
        etag = f'"{blob.digest}"'
        headers["ETag"] = etag
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=headers)
        range_header = request.headers.get("Range")
        if request.headers.get("If-Range", etag) != etag:
            range_header = None  # RFC 9110: a Range for other bytes gets the whole blob
        part = byte_range(range_header, blob.size)
        headers.update(part.headers())
        served = self._s.child(self._s.metrics.served_bytes, blob.source)
        if blob.data is not None:
            # In memory already: headers and body in one write, no stream to drive.
            body = blob.data[part.start : part.end]
            served.inc(len(body))
            return web.Response(status=part.status, headers=headers, body=body)
        response = web.StreamResponse(status=part.status, headers=headers)
        response.content_length = part.length
        record = request[RECORD]
        sent = 0
        try:
            await response.prepare(request)
            async for piece in blob.pieces(part.start, part.end):
                if isinstance(piece, bytes):
                    await response.write(piece)
                    count = len(piece)
                else:
                    await send_span(request, response, piece)
                    count = piece.count
                sent += count
                served.inc(count)
                record.bytes_sent = sent
        except (RegistryError, ConnectionError) as error:
            if isinstance(error, RegistryError):
                log.warning("aborting %s for %s: %s", blob.digest, request.remote, error.message)
            # Headers are gone; the only honest signal left is a connection closed short.
            response.force_close()
            if request.transport is not None:
                request.transport.close()
            return response
        record.bytes_sent = sent
        await response.write_eof()
        return response

    async def _tags(self, request: web.Request, target: Target, path: V2Path) -> web.Response:
        client = client_for(self._s.clients, target)
        query = request.query
        tags = await client.list_tags(target.repository, query.get("n"), query.get("last"))
        headers = {"Content-Type": tags.content_type}
        headers.update(_namespace_header(target))
        if tags.link:
            headers["Link"] = _client_link(tags.link, target, path.name)
        return web.Response(body=tags.body, headers=headers)

    def _count(self, request: web.Request, target: Target, kind: str, result: str) -> None:
        metric = self._s.metrics.cache_requests
        self._s.child(metric, target.upstream.name, kind, result).inc()
        request[RECORD].cache = result


def _asked(request: web.Request, path: V2Path) -> str:
    """What a request wants, for the audit log; the client chose every part of it."""
    ns = request.query.get("ns")
    asked = f"{request.method} {path.kind.value} {path.name!r} {path.reference[:80]!r}"
    return asked + (f" ns={ns[:64]!r}" if ns is not None else "")


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", etag) for tag in tags)


def _offline_miss(endpoint: Kind, offline: UpstreamOffline) -> RegistryError:
    error_class = _OFFLINE_MISS.get(endpoint, NameUnknown)
    return error_class(f"{error_class.default_message}: {offline.message}", offline.detail)


# The same few paths come again and again (every node pulls the same images): parsed once.
# Refusals are not kept; a bounded number of what the clients asked for is.
PARSED_PATHS = 2048


@functools.lru_cache(maxsize=PARSED_PATHS)
def _parse(raw_path: str) -> V2Path:
    try:
        return parse_v2_path(raw_path)
    except InvalidName as exc:
        raise NameInvalid(str(exc)) from None
    except UnknownEndpoint:
        raise Unsupported("not an endpoint of the distribution API", status=404) from None


@functools.lru_cache(maxsize=PARSED_PATHS)
def _reference(text: str) -> Reference:
    try:
        return Reference.parse(text)
    except InvalidDigest as exc:
        raise DigestInvalid(str(exc)) from None
    except InvalidTag as exc:
        raise ManifestUnknown(f"invalid reference: {exc}") from None


# Clients send a few Accept lists, the same on every request: one tuple for each, shared by
# every tag answer kept in memory (recenttags.py) rather than one per answer.
@functools.lru_cache(maxsize=64)
def _accepted(header_lines: tuple[str, ...]) -> tuple[str, ...]:
    return accepted_types(header_lines)


@functools.lru_cache(maxsize=PARSED_PATHS)
def _digest(text: str) -> Digest:
    try:
        return Digest.parse(text)
    except InvalidDigest as exc:
        raise DigestInvalid(str(exc)) from None


def _namespace_header(target: Target) -> dict[str, str]:
    return {"OCI-Namespace": target.namespace} if target.namespace else {}


def _head_response(size: int | None, headers: dict[str, str]) -> web.Response:
    response = web.Response(status=200, headers=headers)
    if size is not None:
        # A HEAD carries the length of the body a GET would send.
        response.headers["Content-Length"] = str(size)
    return response


def _client_link(link: str, target: Target, client_name: str) -> str:
    """Point the upstream's pagination link at the name the client used."""
    rewritten = link.replace(f"/v2/{target.repository}/", f"/v2/{client_name}/", 1)
    rewritten = _NS_PARAM.sub(lambda m: m[1] if m[2] else "", rewritten)
    if target.namespace:
        rewritten = rewritten.replace(">", f"&ns={target.namespace}>", 1)
    return rewritten
