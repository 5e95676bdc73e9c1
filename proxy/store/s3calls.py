"""The S3 blob store's client: how it is made, and every call it makes watched in one
place.

Calls are watched through botocore's ``after-call`` and
``after-call-error`` events fire once per API call (after its retries), whichever code made
it, paginators included, so one hook counts them all and tells when the store went out of
reach and came back.

While the store is known to be out, calls fail at once instead of each waiting out its
connection attempts and retries (seconds a pull would wait before being served from the
upstream): one call in ``RETRY_EVERY`` seconds tries the store, as does every ``/readyz``.

An outage is logged twice, a warning as it starts and a line as it ends, not once per
request: while the store is down every pull would otherwise log.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from proxy.store import StoreUnavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")

_session: AioSession | None = None


def _shared_session() -> AioSession:
    """Every session loads botocore's service models anew (a tenth of a second): one will do
    for every store in the process."""
    global _session
    if _session is None:
        _session = get_session()
    return _session


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where the blobs live, and how to reach them. No keys means the standard AWS chain
    (environment, shared files, instance roles)."""

    bucket: str
    endpoint: str | None = None
    region: str | None = None
    prefix: str = ""  # empty, or a folder ending in "/" (as the config's parser gives it)
    access_key_id: str | None = None
    secret_access_key: str | None = None


def new_client(location: S3Location) -> AbstractAsyncContextManager[S3Client]:
    """A client for the location's store, to enter."""
    config = AioConfig(
        signature_version="s3v4",
        # Custom endpoints (MinIO, Ceph) rarely have per-bucket host names.
        s3={"addressing_style": "path" if location.endpoint else "auto"},
        # Checksums beyond the signature's are sent as aws-chunked trailers, which older
        # S3 implementations (Ceph 16) refuse; the digest checks the bytes anyway.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # A client waits on every call: an unreachable store must fail it in seconds, not
        # after the legacy mode's five attempts and their growing backoff.
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5,
        read_timeout=30,
    )
    return _shared_session().create_client(
        "s3",
        endpoint_url=location.endpoint or None,
        region_name=location.region or None,
        aws_access_key_id=location.access_key_id,
        aws_secret_access_key=location.secret_access_key,
        config=config,
    )


RETRY_EVERY = 5.0

# (operation, status): status is the HTTP status, or "error" when no answer came.
CallCounter = Callable[[str, str], None]


def _ignore(op: str, status: str) -> None:
    pass


class S3Watch:
    """Counts the calls and keeps the store's reachability, from the client's events."""

    def __init__(self, count: CallCounter = _ignore) -> None:
        self.count = count
        self.unreachable: str | None = None  # why, while the store is out of reach
        self._tried = 0.0  # monotonic time of the last call let through in an outage

    def attach(self, client: Any) -> None:
        client.meta.events.register("after-call.s3", self._answered)
        client.meta.events.register("after-call-error.s3", self._failed)

    def _answered(self, event_name: str, http_response: Any, **kwargs: Any) -> None:
        status = http_response.status_code
        self.count(event_name.rsplit(".", 1)[-1], str(status))
        # A 4xx (a missing key, say) is an answer: the store is there.
        if status >= 500:
            self.failed(f"HTTP {status}")
        else:
            self.reached()

    def _failed(self, event_name: str, exception: Exception, **kwargs: Any) -> None:
        self.count(event_name.rsplit(".", 1)[-1], "error")
        self.failed(str(exception))

    def may_call(self) -> bool:
        """Whether to call the store now: always while it answers, once in a while when not."""
        if self.unreachable is None:
            return True
        now = time.monotonic()
        if now - self._tried < RETRY_EVERY:
            return False
        self._tried = now
        return True

    def failed(self, why: str) -> None:
        if self.unreachable is None:
            log.warning(
                "S3 store unreachable (%s): serving from upstreams without caching until it "
                "is back",
                why,
            )
        self.unreachable = why
        self._tried = time.monotonic()

    def reached(self) -> None:
        if self.unreachable is not None:
            log.info("S3 store reachable again: caching blobs in it once more")
        self.unreachable = None


class Watched(Protocol):
    """What ``reaching`` decorates: the store and its writers."""

    @property
    def watch(self) -> S3Watch: ...


def _outage(error: Exception) -> bool:
    if isinstance(error, ClientError):
        status: int = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500
    return isinstance(error, BotoCoreError)


@contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """The store out of reach (no answer, or a 5xx) as StoreUnavailable, which the cache
    rides out by serving from the upstream; any other error is a bug or a misconfiguration
    and stays what it is."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        if _outage(error):
            raise StoreUnavailable(f"S3: {error}") from error
        raise


def _gate(watch: S3Watch) -> None:
    if not watch.may_call():
        raise StoreUnavailable(f"S3: out of reach ({watch.unreachable})")


def reaching(
    method: Callable[P, Coroutine[Any, Any, R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """A call of the store, failing at once while it is known to be out of reach (see
    ``outage_as_unavailable``)."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        watched = cast(Watched, args[0])
        _gate(watched.watch)
        with outage_as_unavailable():
            return await method(*args, **kwargs)

    return call


def reaching_each(method: Callable[P, AsyncIterator[Y]]) -> Callable[P, AsyncIterator[Y]]:
    """``reaching`` for a listing, which calls S3 between the items it yields."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Y]:
        watched = cast(Watched, args[0])
        _gate(watched.watch)
        with outage_as_unavailable():
            async for item in method(*args, **kwargs):
                yield item

    return call
