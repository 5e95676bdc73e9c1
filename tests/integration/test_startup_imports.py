"""A server on the defaults (local blob store, disk index, no logins) does not load the
libraries only other configurations need: aiobotocore and botocore (an S3 bucket), redis (a
Redis index), PyJWT and cryptography (logins, a fleet's peer tokens), bcrypt (htpasswd),
rich (the commands' tables). Each costs start-up time and megabytes in every worker.

Checked in the real processes, supervisor and workers, as they start and serve a cold and a
warm pull: ``python -X importtime`` has every process report each module it imports, on
stderr, which the harness keeps in the server's log."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.conftest import RegcacheFactory
from tests.support import skopeo
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream

OPTIONAL = ("aiobotocore", "botocore", "boto3", "redis", "jwt", "cryptography", "bcrypt", "rich")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)\s*$", re.MULTILINE)


def imported(proxy: RegcacheProcess) -> set[str]:
    return set(IMPORTED.findall(proxy.log_text()))


def test_a_default_server_never_imports_the_optional_backends(
    regcache_factory: RegcacheFactory, upstream: Upstream, tmp_path: Path
) -> None:
    proxy = regcache_factory(
        {"workers": 2, "upstreams": [upstream.entry()]},
        command=[sys.executable, "-X", "importtime", "-m", "proxy"],
    )
    for attempt in ("cold", "warm"):
        skopeo.pull(f"{proxy.host}/library/small:1.0", tmp_path / attempt)
    assert proxy.get("/metrics").status == 200
    assert proxy.get("/status.json").status == 200
    proxy.stop()
    modules = imported(proxy)
    assert "proxy.server.app" in modules, "the log should hold the processes' imports"
    loaded = sorted(m for m in modules if m.split(".")[0] in OPTIONAL)
    assert loaded == []
