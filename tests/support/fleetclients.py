"""Clients of a fleet of replicas: many skopeo pulls at once, a blob read as a stream in a
thread (to watch it stall and go on across a takeover), and checks of what they got."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from . import skopeo
from .images import ImageInfo, sha256_digest
from .regcache import RegcacheProcess


def pull_all(
    jobs: Sequence[tuple[RegcacheProcess, str]], out_root: Path
) -> list[skopeo.PulledImage]:
    """``skopeo copy`` of each ``(replica, "repository:tag")`` at once, into out_root/client<i>."""

    async def run() -> list[skopeo.PulledImage]:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(
                    skopeo.pull_async(f"{replica.host}/{ref}", out_root / f"client{i}")
                )
                for i, (replica, ref) in enumerate(jobs)
            ]
        return [task.result() for task in tasks]

    out_root.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run())


def check_image(pulled: skopeo.PulledImage, image: ImageInfo) -> None:
    """The manifest as pushed, its layers in order, every blob's bytes hashing to its digest
    (skopeo verified those too; this is the test's own look)."""
    assert pulled.manifest == image.manifest
    layers = [layer["digest"] for layer in pulled.manifest_json()["layers"]]
    assert layers == list(image.layer_digests)
    for digest in image.blob_digests:
        assert sha256_digest(pulled.blob(digest)) == digest, f"{pulled.out_dir}: {digest}"


class BlobReader(threading.Thread):
    """``GET /v2/<repository>/blobs/<digest>`` from one replica, read as it streams.

    ``received`` grows as bytes arrive; ``longest_gap`` is the longest wait between two
    reads (a takeover shows as one); ``digest`` is what the bytes hash to once done.
    """

    def __init__(self, replica: RegcacheProcess, repository: str, digest: str) -> None:
        super().__init__(name=f"blob-reader-{replica.port}", daemon=True)
        self.replica = replica
        self.path = f"/v2/{repository}/blobs/{digest}"
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.received = 0
        self.longest_gap = 0.0
        self.digest: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.replica.port, timeout=60)
        try:
            conn.request("GET", self.path)
            response = conn.getresponse()
            self.status = response.status
            self.headers = dict(response.getheaders())
            hasher = hashlib.sha256()
            last = time.monotonic()
            while chunk := response.read1(64 * 1024):
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - last)
                last = now
                hasher.update(chunk)
                self.received += len(chunk)
            self.digest = "sha256:" + hasher.hexdigest()
        except (OSError, http.client.HTTPException) as exc:
            self.error = exc
        finally:
            conn.close()
