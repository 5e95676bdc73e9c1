"""Pass-through credentials in front of Distribution 2.8 behind htpasswd, which knows alice
(``BASIC_CREDS``) and no one else; regcache is configured with no credentials of its own.
skopeo logs in to regcache as it would to any registry, through regcache's token flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import BASIC_CREDS, RegcacheFactory
from tests.support import skopeo
from tests.support.clientauth import basic
from tests.support.regcache import RegcacheProcess
from tests.support.upstreams import Upstream

BOB = ("bob", "bob-Passw0rd")


@pytest.fixture
def passthrough(basic_upstream: Upstream, regcache_factory: RegcacheFactory) -> RegcacheProcess:
    entry = basic_upstream.entry("docker.io", creds=None, credentials="passthrough")
    return regcache_factory({"upstreams": [entry]})


def test_the_user_the_upstream_accepts_pulls_and_no_one_else_even_cached(
    passthrough: RegcacheProcess, basic_upstream: Upstream, tmp_path: Path
) -> None:
    image = basic_upstream.images.app
    pulled = skopeo.pull(passthrough.ref("org/app", "1.0"), tmp_path / "app", creds=BASIC_CREDS)
    assert pulled.manifest == image.manifest
    mark = basic_upstream.registry.mark()
    again = skopeo.pull(passthrough.ref("org/app", "1.0"), tmp_path / "again", creds=BASIC_CREDS)
    assert again.manifest == image.manifest
    # Warm, within passthrough_ttl: not one blob or manifest body fetched again.
    assert basic_upstream.registry.count("GET", r"/v2/org/app/(blobs|manifests)/.*", mark) == 0

    for creds, out in ((BOB, "bob"), (None, "anonymous"), ((BASIC_CREDS[0], "wrong"), "guess")):
        with pytest.raises(skopeo.SkopeoError) as refused:
            skopeo.pull(passthrough.ref("org/app", "1.0"), tmp_path / out, creds=creds)
        assert "401" in refused.value.stderr or "unauthorized" in refused.value.stderr.lower()
        assert not (tmp_path / out / "manifest.json").exists()
    # Nor by hand, for a layer regcache holds.
    layer = pulled.manifest_json()["layers"][0]["digest"]
    for headers in (basic(*BOB), {}):
        answer = passthrough.get(f"/v2/org/app/blobs/{layer}", headers)
        assert answer.status == 401
        assert answer.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert passthrough.metric("regcache_auth_denied_total", reason="bad_credentials") >= 2
    log = passthrough.log_text()
    assert "Traceback" not in log
    assert BASIC_CREDS[1] not in log
    assert BOB[1] not in log
