"""Manifests: tag -> digest resolution with a TTL, and manifests cached by digest.

A tag answer is trusted for the upstream's ``tag_ttl``; after that a HEAD revalidates it
(a HEAD does not count against Docker Hub's pull limit). Manifests are kept byte for
byte with the upstream's media type, and every body is checked against its digest
before it is stored or served.

Replicas sharing a Redis index share the upstream calls too: each runs under a lease named
after its flight, and a replica that waited for another's finds the answer in the index
(README, Scaling out).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from proxy.cache.besteffort import best_effort, or_miss
from proxy.cache.recenttags import RecentTags
from proxy.cache.references import References
from proxy.cache.singleflight import SingleFlight
from proxy.cache.upstreams import client_for
from proxy.cache.usage import Usage
from proxy.errors import (
    ManifestUnknown,
    RegistryError,
    TooManyRequests,
    UpstreamError,
)
from proxy.fleet.leases import Leases, run_once
from proxy.metrics import Metrics
from proxy.model import Kind, StoredManifest, TagEntry, TagKey
from proxy.oci.digest import Digest
from proxy.oci.reference import Reference
from proxy.routing import Target
from proxy.store import Index
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

T = TypeVar("T")

# Not a media type any client sends, so it never collides with a real Accept list.
ANY_ACCEPT = ("*",)


@dataclass(frozen=True, slots=True)
class TagAsk:
    """A tag being resolved: the key its answer is remembered under, and ``since``: an
    answer found in the index checked after it (by another replica, while this one waited
    for the lease) is as good as asking the upstream now. For a client's request that is
    the start of the tag's TTL; for a refresh, the moment it began."""

    key: TagKey
    since: float


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    digest: Digest
    media_type: str
    size: int
    body: bytes | None  # None answers a HEAD that needed no body
    result: str  # hit | miss | revalidated | stale


class ManifestCache:
    def __init__(
        self,
        index: Index,
        clients: dict[str, UpstreamClient],
        metrics: Metrics,
        usage: Usage,
        leases: Leases | None = None,
    ) -> None:
        self._index = index
        self._leases = leases
        self._usage = usage
        self._clients = clients
        self._metrics = metrics
        self._fetches: SingleFlight[StoredManifest] = SingleFlight()
        self._heads: SingleFlight[TagEntry | None] = SingleFlight()
        self._references = References(clients, usage)
        # Not in a fleet, whose replicas answer for each other through the shared index: what
        # one learns, from the upstream or of an outage, the others are to find there.
        self._recent = RecentTags(index) if leases is None else None

    async def get(
        self, target: Target, reference: Reference, accept: tuple[str, ...], head: bool
    ) -> ManifestAnswer:
        if reference.digest is not None:
            answer = await self._by_digest(target, reference.digest, accept, head)
        else:
            assert reference.tag is not None
            answer = await self._by_tag(target, reference.tag, accept, head)
        # Checked before it was served: a tag resolved for this repository names its
        # manifest, a manifest by digest was checked in _by_digest.
        self._usage.served(Kind.MANIFEST, answer.digest, target.ref)
        return answer

    async def refresh(self, target: Target, tag: str, accept: tuple[str, ...]) -> ManifestAnswer:
        """What the upstream says the tag is now, whatever the TTL; the manifest fetched and
        stored if it is new. Not a client's request: nothing is counted as served."""
        key = TagKey(target.upstream.name, target.repository, tag, accept)
        ask = TagAsk(key, time.time())
        previous = await self._get_tag(key)
        return await self._resolve(target, ask, accept, head=False, previous=previous)

    async def _by_digest(
        self, target: Target, digest: Digest, accept: tuple[str, ...], head: bool
    ) -> ManifestAnswer:
        stored = await self._get_manifest(digest)
        if stored is not None:
            await self._references.check(target, Kind.MANIFEST, digest)
            return await self._served(target, stored, head, "hit")
        if head:
            entry = await self._head(target, str(digest), accept)
            if entry is not None and entry.digest == digest:
                return ManifestAnswer(digest, entry.media_type, entry.size, None, "miss")
        stored = await self._fetch(target, str(digest), accept, expected=digest)
        return await self._served(target, stored, head, "miss")

    async def _by_tag(
        self, target: Target, tag: str, accept: tuple[str, ...], head: bool
    ) -> ManifestAnswer:
        key = TagKey(target.upstream.name, target.repository, tag, accept)
        now = time.time()
        ttl = target.upstream.tag_ttl
        recent = self._recent
        entry = None if recent is None else await recent.get(key, ttl, now)
        if entry is not None:
            return await self._serve(target, entry, accept, head, "hit")
        entry = await self._get_tag(key)
        if entry is not None and now - entry.checked_at < ttl:
            if recent is not None:
                recent.put(key, entry)
            return await self._serve(target, entry, accept, head, "hit")
        try:
            ask = TagAsk(key, now - ttl)
            return await self._resolve(target, ask, accept, head, previous=entry)
        except (UpstreamError, TooManyRequests) as error:
            fallback = entry or await self._any_acceptable(key, accept)
            if fallback is None:
                raise
            return await self._stale(target, fallback, head, error)
        except ManifestUnknown as error:
            if entry is None:
                raise
            if not target.upstream.serve_stale_on_not_found:
                await best_effort(self._forget_tag(key), "forget a tag", self._metrics)
                raise
            return await self._stale(target, entry, head, error)

    async def _get_tag(self, key: TagKey) -> TagEntry | None:
        return await or_miss(self._index.get_tag(key), "read a tag")

    async def _get_manifest(self, digest: Digest) -> StoredManifest | None:
        return await or_miss(self._index.get_manifest(digest), "read a manifest")

    async def _forget_tag(self, key: TagKey) -> None:
        if self._recent is not None:
            self._recent.forget(key)
        await self._index.delete_tag(key)
        # Else an outage would serve the deleted tag to any client from this copy.
        await self._index.delete_tag(replace(key, accept=ANY_ACCEPT))

    async def _remember(self, key: TagKey, entry: TagEntry) -> None:
        await best_effort(self._put_tag(key, entry), "remember a tag", self._metrics)

    async def _put_tag(self, key: TagKey, entry: TagEntry) -> None:
        await self._index.put_tags(_tag_keys(key, entry))
        if self._recent is not None:
            self._recent.put(key, entry)

    async def _any_acceptable(self, key: TagKey, accept: tuple[str, ...]) -> TagEntry | None:
        entry = await self._get_tag(replace(key, accept=ANY_ACCEPT))
        # A client that accepts anything (``*/*``, or no Accept at all) takes what there is.
        anything = not accept or "*/*" in accept
        if entry is None or not (anything or entry.media_type in accept):
            return None
        return entry

    async def _resolve(
        self,
        target: Target,
        ask: TagAsk,
        accept: tuple[str, ...],
        head: bool,
        previous: TagEntry | None,
    ) -> ManifestAnswer:
        """Ask the upstream what the tag is now. A HEAD revalidates, and answers a HEAD."""
        tag = ask.key.tag
        current = await self._head(target, tag, accept, ask) if previous or head else None
        if current is None:
            stored = await self._fetch(target, tag, accept, None, ask)
            return await self._served(target, stored, head, "miss")
        same = previous is not None and previous.digest == current.digest
        return await self._serve(target, current, accept, head, "revalidated" if same else "miss")

    async def _stale(
        self, target: Target, entry: TagEntry, head: bool, error: RegistryError
    ) -> ManifestAnswer:
        """The last known answer, when the upstream cannot give a current one."""
        stored = await self._get_manifest(entry.digest)
        if stored is None and not head:
            raise error
        log.warning(
            "serving %s:%s stale (%s): %s",
            target.repository,
            entry.digest,
            target.upstream.name,
            error.message,
        )
        self._metrics.stale_served.labels(target.upstream.name).inc()
        if stored is None:
            return ManifestAnswer(entry.digest, entry.media_type, entry.size, None, "stale")
        return await self._served(target, stored, head, "stale")

    async def _serve(
        self, target: Target, entry: TagEntry, accept: tuple[str, ...], head: bool, result: str
    ) -> ManifestAnswer:
        if head:
            return ManifestAnswer(entry.digest, entry.media_type, entry.size, None, result)
        stored = await self._get_manifest(entry.digest)
        if stored is None:
            stored = await self._fetch(target, str(entry.digest), accept, entry.digest)
            result = "miss"
        return await self._served(target, stored, head, result)

    async def _served(
        self, target: Target, stored: StoredManifest, head: bool, result: str
    ) -> ManifestAnswer:
        """The answer for a manifest ``target`` references; what it references, ``target``
        references too (parsed once per manifest and repository while remembered). A manifest
        just fetched teaches the index too, before the client can ask another worker for what
        it references; one read from the index was taught by whoever fetched it, so a warm
        answer leaves its records to the next batch."""
        learned = self._usage.learn_manifest(stored, target.ref)
        if result == "miss":
            await self._usage.publish(learned)
        return _answer(stored, head, result)

    async def _head(
        self,
        target: Target,
        ref: str,
        accept: tuple[str, ...],
        remember: TagAsk | None = None,
    ) -> TagEntry | None:
        """What the upstream says ``ref`` is now, or None if it did not say a digest.

        With ``remember``, the answer is put in the tag index inside the shared call, so
        that no request arriving between the answer and the index update asks again.
        """
        key = ("head", target.upstream.name, target.repository, ref, accept)

        async def call() -> TagEntry | None:
            client = client_for(self._clients, target)
            head = await client.head_manifest(target.repository, ref, accept)
            if head.digest is None or head.size is None:
                return None
            entry = TagEntry(head.digest, head.media_type, head.size, time.time())
            if remember is not None:
                await self._remember(remember.key, entry)
            return entry

        async def found() -> TagEntry | None:
            if remember is not None:
                return await self._answered(remember)
            # Without a tag to remember, ``ref`` is a digest (_by_digest).
            stored = await self._get_manifest(Digest.parse(ref))
            return None if stored is None else _entry(stored, time.time())

        shared = self._across_replicas(target, ref, accept, found, call)
        entry, joined = await self._heads.do(key, shared)
        if joined:
            self._metrics.dedup_joins.labels("manifest").inc()
        return entry

    async def _fetch(
        self,
        target: Target,
        ref: str,
        accept: tuple[str, ...],
        expected: Digest | None,
        remember: TagAsk | None = None,
    ) -> StoredManifest:
        """The manifest from the upstream, verified and stored; ``remember`` as for _head."""
        key = ("get", target.upstream.name, target.repository, ref, accept)

        async def call() -> StoredManifest:
            client = client_for(self._clients, target)
            stored = await client.get_manifest(target.repository, ref, accept, expected)
            tags = [] if remember is None else _tag_keys(remember.key, _entry(stored, time.time()))
            if await best_effort(
                self._index.put_manifest_tagged(stored, tags), "store a manifest", self._metrics
            ):
                self._usage.stored(Kind.MANIFEST, stored.digest, len(stored.body))
            return stored

        async def found() -> StoredManifest | None:
            digest = expected
            if digest is None and remember is not None:
                entry = await self._answered(remember)
                digest = entry.digest if entry is not None else None
            return None if digest is None else await self._get_manifest(digest)

        shared = self._across_replicas(target, ref, accept, found, call)
        stored, joined = await self._fetches.do(key, shared)
        if joined:
            self._metrics.dedup_joins.labels("manifest").inc()
        return stored

    async def _answered(self, ask: TagAsk) -> TagEntry | None:
        """The tag's answer in the index, if it is recent enough to take for the upstream's."""
        entry = await self._get_tag(ask.key)
        return entry if entry is not None and entry.checked_at > ask.since else None

    def _across_replicas(
        self,
        target: Target,
        ref: str,
        accept: tuple[str, ...],
        found: Callable[[], Awaitable[T | None]],
        ask: Callable[[], Awaitable[T]],
    ) -> Callable[[], Awaitable[T]]:
        """``ask`` the upstream by one replica at a time: the others wait for its lease, then
        find the answer it put in the shared index (``found``) rather than ask again."""
        leases = self._leases
        if leases is None:
            return ask

        async def work() -> T:
            answer = await found()
            if answer is not None:
                self._metrics.lease_waits.labels("manifest").inc()
                return answer
            return await ask()

        # As long as the holder's own request may take; then ask without it.
        wait = target.upstream.connect_timeout + target.upstream.read_timeout
        return lambda: run_once(leases, _lease_name(target, ref, accept), work, wait)


def _lease_name(target: Target, ref: str, accept: tuple[str, ...]) -> str:
    """One lease per flight of any replica: a tag's answer depends on the Accept list, a
    manifest by digest does not (it is served from the index whatever the client accepts)."""
    name = f"manifest:{target.upstream.name}/{target.repository}:{ref}"
    if ":" in ref:  # a digest
        return name
    listed = hashlib.sha256(json.dumps(accept).encode()).hexdigest()[:16]
    return f"{name}:{listed}"


def _tag_keys(key: TagKey, entry: TagEntry) -> list[tuple[TagKey, TagEntry]]:
    """What remembering a tag's answer writes: with the latest answer whatever the client
    accepted, for clients with other Accept lists when the upstream is down."""
    return [(key, entry), (replace(key, accept=ANY_ACCEPT), entry)]


def _entry(stored: StoredManifest, now: float) -> TagEntry:
    return TagEntry(stored.digest, stored.media_type, len(stored.body), now)


def _answer(stored: StoredManifest, head: bool, result: str) -> ManifestAnswer:
    body = None if head else stored.body
    return ManifestAnswer(stored.digest, stored.media_type, len(stored.body), body, result)
