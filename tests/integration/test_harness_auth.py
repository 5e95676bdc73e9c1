"""The integration harness's authenticating upstreams, checked against the real registry, skopeo
and token server: htpasswd logins, and tokens with their audience, scope and password grant."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support import skopeo
from tests.support.httpclient import basic_auth, http_get, http_request
from tests.support.images import ACCEPT_ALL
from tests.support.tokenserver import Scope
from tests.support.upstreams import BASIC_CREDS, Upstream

# -- auth -----------------------------------------------------------------------------------


def test_htpasswd_refuses_without_creds_and_accepts_with_them(
    basic_upstream: Upstream, tmp_path: Path
) -> None:
    url = basic_upstream.url + "/v2/library/small/manifests/1.0"
    refused = http_get(url, ACCEPT_ALL)
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert http_get(url, {**ACCEPT_ALL, **basic_auth("alice", "wrong")}).status == 401
    accepted = http_get(url, {**ACCEPT_ALL, **basic_auth(*BASIC_CREDS)})
    assert accepted.status == 200
    assert accepted.body == basic_upstream.images.small.manifest

    src = basic_upstream.ref("library/small", "1.0")
    with pytest.raises(skopeo.SkopeoError, match=r"unauthorized|authentication required"):
        skopeo.inspect_raw(src)
    pulled = skopeo.pull(src, tmp_path / "out", creds=BASIC_CREDS)
    assert pulled.manifest == basic_upstream.images.small.manifest
    assert basic_upstream.entry()["username"] == "alice"


def test_token_auth_end_to_end(token_upstream: Upstream, tmp_path: Path) -> None:
    tokens = token_upstream.token_server
    assert tokens is not None
    challenge = http_get(token_upstream.url + "/v2/").headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'realm="{tokens.realm}"' in challenge
    assert f'service="{tokens.service}"' in challenge

    before = len(tokens.token_requests)
    app = token_upstream.images.app
    pulled = skopeo.pull(
        token_upstream.ref("org/app", "1.0"), tmp_path / "a", creds=("bob", "hunter2")
    )
    assert pulled.manifest == app.manifest
    # One token per skopeo process: it caches the token for all of the image's requests.
    assert tokens.token_requests[before:] == [("bob", ("repository:org/app:pull",))]

    # Anonymous clients may pull library/* (like Docker Hub) but nothing else.
    small = token_upstream.images.small
    anon = skopeo.pull(token_upstream.ref("library/small", "1.0"), tmp_path / "b")
    assert anon.manifest == small.manifest
    assert tokens.token_requests[-1] == (None, ("repository:library/small:pull",))
    with pytest.raises(skopeo.SkopeoError, match=r"unauthorized|authentication required"):
        skopeo.inspect_raw(token_upstream.ref("org/app", "1.0"))

    rejected = tokens.rejected
    with pytest.raises(skopeo.SkopeoError, match="invalid username/password"):
        skopeo.inspect_raw(token_upstream.ref("org/app", "1.0"), creds=("bob", "wrong"))
    assert tokens.rejected == rejected + 1

    # bob may not push: the token server grants pull only, and the registry enforces it.
    with pytest.raises(skopeo.SkopeoError, match=r"denied|unauthorized"):
        skopeo.push(
            token_upstream.images.layout_dir,
            "tool",
            token_upstream.ref("org/tool", "1.0"),
            creds=("bob", "hunter2"),
        )


def test_registry_verifies_token_audience_and_scope(token_upstream: Upstream) -> None:
    tokens = token_upstream.token_server
    assert tokens is not None
    url = token_upstream.url + "/v2/org/app/manifests/1.0"
    pull_app = [Scope("repository", "org/app", ("pull",))]

    def get_with(token: str) -> int:
        return http_get(url, {**ACCEPT_ALL, "Authorization": f"Bearer {token}"}).status

    good = tokens.issue("alice", pull_app, tokens.service)
    assert tokens.decode_claims(good)["access"] == [
        {"type": "repository", "name": "org/app", "actions": ["pull"]}
    ]
    assert get_with(good) == 200
    assert get_with(tokens.issue("alice", pull_app, "some-other-service")) == 401
    assert get_with(tokens.issue("alice", [Scope("repository", "org/x", ("pull",))], None)) == 401

    # The token endpoint itself, as a client such as the proxy calls it.
    query = "service={}&scope=repository:org/app:pull&scope=repository:library/small:pull"
    resp = http_get(f"{tokens.realm}?{query.format(tokens.service)}", basic_auth("alice", "s3cret"))
    assert resp.status == 200
    body = resp.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] > 0
    assert body["issued_at"]
    assert get_with(body["token"]) == 200
    assert tokens.token_requests[-1] == (
        "alice",
        ("repository:org/app:pull", "repository:library/small:pull"),
    )

    # The OAuth2 password grant (containerd tries it before GET).
    form = {"grant_type": "password", "username": "bob", "password": "hunter2"}
    form |= {"service": tokens.service, "scope": "repository:org/app:pull", "client_id": "t"}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    posted = http_request("POST", tokens.realm, headers, urlencode(form).encode())
    assert posted.status == 200
    assert get_with(posted.json()["access_token"]) == 200
    form["password"] = "wrong"
    assert http_request("POST", tokens.realm, headers, urlencode(form).encode()).status == 401
