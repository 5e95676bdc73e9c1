"""Fixtures of the unit tests that need a server: the typed registry client's harness."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from proxy.upstream import blobstream
from tests.support.misbehaving import Harness, MisbehavingRegistry


@pytest.fixture
async def harness(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(blobstream, "RESUME_BACKOFF", (0.0, 0.0, 0.0))
    fake = MisbehavingRegistry()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield Harness(fake, server, session)
    fake.unstall.set()
    await server.close()
