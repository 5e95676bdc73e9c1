"""Writing one blob into the S3 store: a multipart upload while the bytes stream in, completed
only once the digest checks out, and a local spool the blob's followers read meanwhile.

A follower writer (for a blob another replica uploads) only spools, and its commit verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from proxy.oci.digest import Digest, Hasher
from proxy.store import (
    BlobInfo,
    BlobReader,
    BlobWriter,
    DigestMismatch,
    StoredBlob,
    StoreUnavailable,
)
from proxy.store.s3calls import S3Watch, reaching
from proxy.store.spool import Spool

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, UploadPartOutputTypeDef


class UploadTarget(Protocol):
    """What a writer needs of its store (S3BlobStore), named here so that the two modules
    do not import each other."""

    part_size: int
    bucket: str

    @property
    def client(self) -> S3Client: ...

    @property
    def watch(self) -> S3Watch: ...

    def key(self, digest: Digest) -> str: ...

    def committing(self, digest: Digest) -> AbstractAsyncContextManager[None]: ...

    async def stat(self, digest: Digest) -> BlobInfo | None: ...

    def added(self, size: int) -> None: ...

    async def reader(self, digest: Digest) -> StoredBlob | None: ...

    async def abort_upload(self, key: str, upload_id: str) -> None: ...


class S3BlobWriter(BlobWriter):
    def __init__(
        self, store: UploadTarget, digest: Digest, spool: Path, *, upload: bool = True
    ) -> None:
        self._store = store
        self._digest = digest
        self._key = store.key(digest)
        self._hasher = digest.hasher()
        self._spool = Spool(spool)
        self._part = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._sending: asyncio.Task[UploadPartOutputTypeDef] | None = None
        self._state = "open"
        # Set when a part could not go up: the spool goes on for the followers, and commit
        # fails with it, so that the transfer serves the blob uncached.
        self._broken: StoreUnavailable | None = None
        self._upload = upload
        self.written = 0
        # Given the spool once the blob is in the bucket, before the spool is removed: a
        # local tier links the verified file in rather than copying its bytes again.
        self.keep: Callable[[Path], Awaitable[None]] | None = None

    async def open(self) -> None:
        await self._spool.open()

    async def write(self, chunk: bytes) -> None:
        assert self._state == "open", self._state
        self._hasher.update(chunk)
        await self._spool.write(chunk)
        self.written += len(chunk)
        if self._broken is not None or not self._upload:
            return
        self._part += chunk
        if len(self._part) >= self._store.part_size:
            try:
                await self._send_part()
            except StoreUnavailable as error:
                self._broken = error
                self._part.clear()

    @reaching
    async def _send_part(self) -> None:
        """Start the buffered part's upload. One part goes up while the next one fills, so
        that the download feeding the writer is held up only when the store is slower."""
        await self._sent()
        client, bucket = self._store.client, self._store.bucket
        if self._upload_id is None:
            started = await client.create_multipart_upload(Bucket=bucket, Key=self._key)
            self._upload_id = started["UploadId"]
        number, body = len(self._parts) + 1, bytes(self._part)
        self._part.clear()
        self._sending = asyncio.create_task(
            client.upload_part(
                Bucket=bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
            )
        )
        self._parts.append({"PartNumber": number, "ETag": ""})

    async def _sent(self) -> None:
        """Wait for the part going up, if any; its failure is the writer's."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            self._parts[-1]["ETag"] = (await sending)["ETag"]

    @property
    def watch(self) -> S3Watch:
        return self._store.watch

    async def commit(self) -> None:
        """Also raises StoreUnavailable, leaving the writer open to ``detach``."""
        assert self._state == "open", self._state
        actual = self._hasher.hexdigest()
        if actual != self._digest.hex:
            await self._end("aborted")
            raise DigestMismatch(self._digest, f"{self._digest.algorithm}:{actual}", self.written)
        if self._broken is not None:
            raise self._broken
        if not self._upload:
            # Verified; the spool stays readable until ``abort``, the bucket is the owner's.
            await self._spool.close()
            self._state = "verified"
            return
        async with self._store.committing(self._digest):
            if await self._store.stat(self._digest) is None:
                await self._complete()
                self._store.added(self.written)
        if self.keep is not None:
            await self.keep(self._spool.path)
        await self._end("committed")

    @reaching
    async def _complete(self) -> None:
        client, bucket = self._store.client, self._store.bucket
        if self._upload_id is None:
            await client.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._part))
            return
        if self._part:
            await self._send_part()
        await self._sent()
        await client.complete_multipart_upload(
            Bucket=bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        # Completed: nothing left for ``_end`` to abort. (Ceph answers an empty ETag here,
        # which is why nothing reads it.)
        self._upload_id = None

    async def abort(self) -> None:
        if self._state == "verified":  # its readers go on to the owner's object
            await self._end("committed")
        elif self._state != "committed":
            await self._end("aborted")

    async def detach(self) -> Hasher:
        self._state = "detached"
        await self._spool.close()
        return self._hasher

    async def reader(self) -> BlobReader | None:
        if self._state == "aborted":
            return None
        if self._state in ("open", "detached", "verified"):
            opened = await asyncio.to_thread(self._spool.open_reader)
            if opened is not None:
                return opened
        return await self._store.reader(self._digest)

    async def _end(self, state: str) -> None:
        self._state = state
        self._part.clear()
        await self._spool.discard()
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.cancel()
            # Not aborted under a part still going up. Cancelled or failed, the part no longer
            # matters: wait() does not raise, so the caller's own cancellation still does.
            await asyncio.wait([sending])
            if not sending.cancelled():
                sending.exception()  # retrieved, so that asyncio does not report it lost
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            # Out of reach, its parts are aborted as stale at a later start.
            with contextlib.suppress(StoreUnavailable):
                await self._store.abort_upload(self._key, upload_id)
