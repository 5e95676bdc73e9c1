"""Blobs as objects ``<prefix>blobs/<algorithm>/<hex>`` in an S3-compatible bucket.

A writer uploads while the bytes stream in: a multipart upload to the blob's final key,
begun once a part's worth has arrived, or one PUT at commit for a blob smaller than a part.
The upload is completed only after the digest checks out, and S3 shows nothing under a key
before its multipart upload is completed, so a visible object is always a verified one.
That spares the copy a temporary key would cost (a server-side copy of a large blob takes
as long as its upload did) and its leftover object after a crash; an interrupted upload
leaves only parts, which ``open`` aborts once they are old.

Upload parts cannot be read before the object is complete, so a writer also spools its
bytes to a local file, which followers of the growing blob read (with sendfile): see
s3writer.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from proxy.oci.digest import Digest, InvalidDigest
from proxy.store import (
    BlobInfo,
    BlobStore,
    BlobWriter,
    StoredBlob,
    StoreUnavailable,
)
from proxy.store.s3calls import (
    S3Location,
    S3Watch,
    new_client,
    outage_as_unavailable,
    reaching,
    reaching_each,
)
from proxy.store.s3writer import S3BlobWriter
from proxy.store.spool import clear_directory

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
READ_CHUNK = 256 * 1024
# An upload still unfinished after this long belongs to a process that is gone: a live one
# completes or aborts its own. Other replicas may be uploading right now, so younger ones stay.
STALE_UPLOAD_AGE = 24 * 3600.0


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


class S3StoredBlob(StoredBlob):
    def __init__(self, store: S3BlobStore, key: str, size: int) -> None:
        self._store = store
        self._key = key
        self.size = size

    async def read(self, offset: int, end: int) -> AsyncIterator[bytes]:
        if offset >= end:
            return
        answer = await self._store.client.get_object(
            Bucket=self._store.bucket, Key=self._key, Range=f"bytes={offset}-{end - 1}"
        )
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk

    async def close(self) -> None:
        pass  # every read holds its own response, released when the read ends


class S3BlobStore(BlobStore):
    """``open`` before use, ``close`` after. ``total_size`` is measured at ``open`` and kept by
    this process's own commits and deletes, as the file store's is; other replicas writing
    to the same bucket are not counted until the next ``open``."""

    def __init__(self, location: S3Location, spool_dir: Path, part_size: int = PART_SIZE) -> None:
        assert not location.prefix or location.prefix.endswith("/"), "a prefix is a folder"
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.part_size = part_size
        self._location = location
        self._spool_dir = spool_dir
        self._exits = AsyncExitStack()
        self._client: S3Client | None = None
        self._total = 0
        self._commit_locks: dict[Digest, tuple[asyncio.Lock, int]] = {}
        self.watch = S3Watch()

    async def open(self, clean: bool = True) -> None:
        """Connect and size the store; with ``clean``, also drop what interrupted writes left
        (the local spool, stale uploads), as for FsBlobStore.open.

        A store out of reach does not stop the start: the server then serves from upstreams
        uncached until it is back (``watch.unreachable`` says so meanwhile), and the size
        counts from 0 until the next ``remeasure``."""
        self._client = await self._exits.enter_async_context(new_client(self._location))
        self.watch.attach(self._client)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        if clean:
            await asyncio.to_thread(clear_directory, self._spool_dir)
        try:
            if clean:
                await self._abort_stale_uploads(time.time() - STALE_UPLOAD_AGE)
            await self.remeasure()
        except StoreUnavailable:
            pass  # logged by the watch, as the outage's start

    async def check(self) -> None:
        # Not gated by the watch: the probe that tells when an outage has ended.
        with outage_as_unavailable():
            await self.client.head_bucket(Bucket=self.bucket)

    @reaching
    async def remeasure(self) -> None:
        self._total = sum([size async for _, size in self._objects()])

    async def close(self) -> None:
        await self._exits.aclose()
        self._client = None

    @property
    def client(self) -> S3Client:
        assert self._client is not None, "S3 blob store not open"
        return self._client

    def key(self, digest: Digest) -> str:
        return f"{self.prefix}blobs/{digest.algorithm}/{digest.hex}"

    async def _objects(self) -> AsyncIterator[tuple[Digest, int]]:
        pages = self.client.get_paginator("list_objects_v2")
        async for page in pages.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"):
            for found in page.get("Contents", []):
                name = found["Key"].removeprefix(f"{self.prefix}blobs/").replace("/", ":", 1)
                try:
                    yield Digest.parse(name), found["Size"]
                except InvalidDigest:
                    log.warning("ignoring stray object in the blob bucket: %s", found["Key"])

    async def uploads(self) -> list[tuple[str, str, float]]:
        """Unfinished multipart uploads under the prefix: key, upload id, start time."""
        pages = self.client.get_paginator("list_multipart_uploads")
        found = []
        async for page in pages.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/"):
            for upload in page.get("Uploads", []):
                started = upload["Initiated"].timestamp()
                found.append((upload["Key"], upload["UploadId"], started))
        return found

    @reaching
    async def _abort_stale_uploads(self, started_before: float) -> None:
        for key, upload_id, started in await self.uploads():
            if started < started_before:
                await self.abort_upload(key, upload_id)

    @reaching
    async def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as error:
            # Another process cleared it as stale: what aborting was for is done.
            if _code(error) != "NoSuchUpload":
                raise

    @reaching
    async def stat(self, digest: Digest) -> BlobInfo | None:
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except ClientError as error:
            if _code(error) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return BlobInfo(head["ContentLength"], head["LastModified"].timestamp())

    async def reader(self, digest: Digest) -> StoredBlob | None:
        info = await self.stat(digest)
        return None if info is None else S3StoredBlob(self, self.key(digest), info.size)

    async def presigned_url(self, digest: Digest, expires: int = 300) -> str:
        """A URL that GETs the blob without credentials for ``expires`` seconds, for
        redirecting clients to the store (``storage.s3.redirect``)."""
        return await self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(digest)},
            ExpiresIn=expires,
        )

    # Every replica's uploads land in the one bucket.
    shared = True

    async def writer(self, digest: Digest) -> BlobWriter:
        return await self._writer(digest, upload=True)

    async def follower_writer(self, digest: Digest) -> BlobWriter:
        return await self._writer(digest, upload=False)

    async def _writer(self, digest: Digest, *, upload: bool) -> BlobWriter:
        spool = self._spool_dir / f"{digest.hex[:16]}-{uuid.uuid4().hex}"
        writer = S3BlobWriter(self, digest, spool, upload=upload)
        await writer.open()
        return writer

    @reaching
    async def delete(self, digest: Digest) -> bool:
        info = await self.stat(digest)
        if info is None:
            return False
        await self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        self._total -= info.size
        self.changes += 1
        return True

    async def total_size(self) -> int:
        return self._total

    @reaching_each
    async def digests(self) -> AsyncIterator[Digest]:
        async for digest, _ in self._objects():
            yield digest

    def added(self, size: int) -> None:
        self._total += size
        self.changes += 1

    @asynccontextmanager
    async def committing(self, digest: Digest) -> AsyncIterator[None]:
        """Writers racing on one digest in this process complete (and count) it once: the
        check for the stored object and the completion must not interleave."""
        lock, users = self._commit_locks.get(digest, (asyncio.Lock(), 0))
        self._commit_locks[digest] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._commit_locks[digest]
            if users == 1:
                del self._commit_locks[digest]
            else:
                self._commit_locks[digest] = (lock, users - 1)
