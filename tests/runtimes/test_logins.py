"""Real runtimes logging in to a regcache with logins on: ``docker login`` + ``docker pull``,
``ctr images pull --user`` through a hosts.toml mirror, ``podman login`` + ``podman pull``.

One regcache for this module, anonymous off, with rules giving alice Docker Hub's library and
bob ``org/``. Each test checks what the client did, what regcache counted
(``regcache_auth_logins_total``, ``regcache_auth_denied_total``) and that no password reached
regcache's log. Every wrong password counts against 127.0.0.1's limit of 10 failed logins a
minute, so the module spends few of them.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtimes.conftest import REGISTRIES
from tests.support.containerd import Containerd, write_hosts_dir
from tests.support.dockerd import Dockerd
from tests.support.htpasswd import htpasswd_file
from tests.support.podman import Podman
from tests.support.regcache import RegcacheProcess
from tests.support.runtimes import (
    CommandError,
    access_mark,
    regcache_requests,
    short_tmpdir,
    v2_requests,
    with_json_logs,
)
from tests.support.upstreams import BASIC_CREDS, Upstream

pytestmark = pytest.mark.runtimes

USERS = {"alice": "alice-Runtime-Passw0rd", "bob": "bob-Runtime-Passw0rd"}
WRONG = "wrong-Runtime-Passw0rd"


@pytest.fixture(scope="module")
def login_cache(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegcacheProcess]:
    work_dir = tmp_path_factory.mktemp("login-regcache")
    config = {
        "default_upstream": "docker.io",
        "upstreams": [upstream.entry("docker.io")],
        "auth": {"htpasswd": str(htpasswd_file(work_dir, USERS)), "anonymous": False},
        "access": [
            {"repositories": ["docker.io/library/**"], "users": ["alice"]},
            {"repositories": ["docker.io/org/**"], "users": ["bob"]},
        ],
    }
    proc = RegcacheProcess(with_json_logs(config), work_dir=work_dir)
    proc.start()
    yield proc
    proc.stop()
    log = proc.log_text()
    print(f"--- {proc!r} log (last 20000 chars) ---\n{log[-20000:]}")


def auth_counts(cache: RegcacheProcess) -> Counter[str]:
    """``login:<method>`` and ``denied:<reason>`` from regcache's metrics."""
    found: Counter[str] = Counter()
    for (name, labels), value in cache.metrics().items():
        label = dict(labels)
        if name == "regcache_auth_logins_total":
            found[f"login:{label['method']}"] += int(value)
        elif name == "regcache_auth_denied_total":
            found[f"denied:{label['reason']}"] += int(value)
    return found


def since(before: Counter[str], cache: RegcacheProcess) -> dict[str, int]:
    after = auth_counts(cache)
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def assert_no_password_logged(cache: RegcacheProcess) -> None:
    log = cache.log_text()
    assert "Traceback" not in log
    for password in (*USERS.values(), WRONG):
        assert password not in log


# -- Docker ------------------------------------------------------------------------------------


def docker_as(docker: Dockerd, config_dir: Path, *args: str) -> str:
    """The docker CLI with a client config (where ``docker login`` keeps credentials) of the
    test's own, not root's."""
    return docker.docker("--config", str(config_dir), *args)


def test_docker_login_and_pull(
    docker: Dockerd, login_cache: RegcacheProcess, upstream: Upstream, tmp_path: Path
) -> None:
    # Docker talks plain http to a registry in 127.0.0.0/8 without being told (its default
    # insecure-registries), so the session's daemon serves here unchanged.
    assert "127.0.0.0/8" in docker.info()["RegistryConfig"]["InsecureRegistryCIDRs"]
    host = login_cache.host
    before = auth_counts(login_cache)
    mark = access_mark(login_cache)

    out = docker_as(docker, tmp_path, "login", "-u", "alice", "-p", USERS["alice"], host)
    assert "Login Succeeded" in out
    docker_as(docker, tmp_path, "pull", f"{host}/library/small:1.0")

    assert docker.image(f"{host}/library/small:1.0").id == upstream.images.small.config_digest
    seen = regcache_requests(login_cache, mark, agent="docker/")
    print("docker login + pull:", *(str(e) for e in seen), sep="\n  ")
    assert any(e.path == "/token" and e.method == "GET" and e.status == 200 for e in seen)
    blob_gets = {
        e.path for e in seen if e.method == "GET" and "/blobs/" in e.path and e.status == 200
    }
    assert len(blob_gets) == len(upstream.images.small.blob_digests)
    counted = since(before, login_cache)
    print("counted:", counted)
    # One token for the login's /v2/ check, one for the pull; each after the challenge.
    assert counted == {"login:token": 2, "denied:no_credentials": 2}
    assert_no_password_logged(login_cache)


def test_docker_wrong_password_and_a_denied_repository(
    docker: Dockerd, login_cache: RegcacheProcess, tmp_path: Path
) -> None:
    host = login_cache.host
    before = auth_counts(login_cache)

    with pytest.raises(CommandError) as wrong:
        docker_as(docker, tmp_path, "login", "-u", "alice", "-p", WRONG, host)
    print("docker login, wrong password:", wrong.value.output)
    # regcache's own words reach the user through the daemon.
    assert "unauthorized: wrong user name or password" in wrong.value.output
    assert since(before, login_cache).get("denied:bad_credentials") == 1

    docker_as(docker, tmp_path, "login", "-u", "alice", "-p", USERS["alice"], host)
    before = auth_counts(login_cache)
    with pytest.raises(CommandError) as denied:
        docker_as(docker, tmp_path, "pull", f"{host}/org/app:1.0")
    print("docker pull, bob's repository as alice:", denied.value.output)
    assert "pull access denied" in denied.value.output
    counted = since(before, login_cache)
    print("counted:", counted)
    # alice's token leaves org/app out; the manifest request with it is refused.
    assert counted.get("denied:wrong_scope", 0) >= 1
    assert "denied:bad_credentials" not in counted
    assert_no_password_logged(login_cache)


# -- containerd --------------------------------------------------------------------------------


@pytest.fixture
def login_hosts_dir(login_cache: RegcacheProcess, tmp_path: Path) -> Path:
    return write_hosts_dir(tmp_path / "certs.d", login_cache.host, REGISTRIES)


def ctr_pull(containerd: Containerd, namespace: str, hosts_dir: Path, user: str, ref: str) -> None:
    containerd.ctr(
        namespace,
        *("images", "pull", "--hosts-dir", str(hosts_dir), "--snapshotter", "native"),
        *("--user", user, ref),
    )


def test_ctr_pull_with_user_through_the_mirror(
    containerd: Containerd,
    ctr_ns: str,
    login_cache: RegcacheProcess,
    login_hosts_dir: Path,
    upstream: Upstream,
) -> None:
    before = auth_counts(login_cache)
    mark = access_mark(login_cache)

    ref = "docker.io/org/app:1.0"
    ctr_pull(containerd, ctr_ns, login_hosts_dir, f"bob:{USERS['bob']}", ref)

    assert containerd.image(ctr_ns, ref).digest == upstream.images.app.manifest_digest
    seen = regcache_requests(login_cache, mark, agent="containerd/")
    print("ctr pull --user bob:", *(str(e) for e in seen), sep="\n  ")
    # containerd has credentials, so it asks for its token with OAuth2's password grant.
    assert any(e.method == "POST" and e.path == "/token" and e.status == 200 for e in seen)
    assert not [e for e in seen if e.path == "/token" and e.method == "GET"]
    assert all(e.status == 200 for e in seen if "/blobs/" in e.path)
    counted = since(before, login_cache)
    print("counted:", counted)
    assert counted.get("login:token", 0) >= 1
    assert "denied:bad_credentials" not in counted
    assert_no_password_logged(login_cache)


def test_ctr_pull_refused(
    containerd: Containerd, ctr_ns: str, login_cache: RegcacheProcess, login_hosts_dir: Path
) -> None:
    before = auth_counts(login_cache)
    mark = access_mark(login_cache)

    with pytest.raises(CommandError) as wrong:
        ctr_pull(containerd, ctr_ns, login_hosts_dir, f"bob:{WRONG}", "docker.io/org/app:1.0")
    print("ctr pull, wrong password:", wrong.value.output[-2000:])
    with pytest.raises(CommandError) as denied:
        ctr_pull(
            containerd,
            ctr_ns,
            login_hosts_dir,
            f"bob:{USERS['bob']}",
            "docker.io/library/small:1.0",
        )
    print("ctr pull, alice's repository as bob:", denied.value.output[-2000:])

    assert containerd.images(ctr_ns) == []
    seen = regcache_requests(login_cache, mark, agent="containerd/")
    print("refused ctr pulls:", *(str(e) for e in seen), sep="\n  ")
    assert not [e for e in seen if "/blobs/" in e.path]
    tokens = [f"{e.method} {e.path} -> {e.status}" for e in seen if e.path == "/token"]
    # A 401 to the POST sends containerd to GET /token, refused too; then the right password.
    assert tokens[:2] == ["POST /token -> 401", "GET /token -> 401"], tokens
    assert "insufficient_scope" in denied.value.output
    counted = since(before, login_cache)
    print("counted:", counted)
    assert counted.get("denied:bad_credentials") == 2
    assert counted.get("denied:wrong_scope") == 1
    assert_no_password_logged(login_cache)


# -- podman ------------------------------------------------------------------------------------


@pytest.fixture
def login_podman(login_cache: RegcacheProcess) -> Iterator[Podman]:
    # podman refuses a --runroot longer than 50 characters; pytest's tmp_path can be longer.
    work_dir = short_tmpdir("podman")
    yield Podman(work_dir, login_cache.host, REGISTRIES)
    shutil.rmtree(work_dir, ignore_errors=True)


def podman_login(podman: Podman, host: str, user: str, password: str) -> str:
    # The mirror entries in registries.conf are insecure; the login names the bare host.
    return podman.podman("login", "--tls-verify=false", "-u", user, "-p", password, host)


def test_podman_login_and_pull(
    login_podman: Podman, login_cache: RegcacheProcess, upstream: Upstream
) -> None:
    host = login_cache.host
    before = auth_counts(login_cache)
    mark = access_mark(login_cache)

    assert "Login Succeeded" in podman_login(login_podman, host, "alice", USERS["alice"])
    pulled = login_podman.pull("docker.io/library/small:1.0")

    assert pulled.id == upstream.images.small.config_digest.removeprefix("sha256:")
    seen = regcache_requests(login_cache, mark)
    print("podman login + pull:", *(str(e) for e in seen), sep="\n  ")
    mirrored = [e for e in v2_requests(seen) if "/v2/docker.io/library/small/" in e]
    assert mirrored, "podman did not pull through the mirror"
    counted = since(before, login_cache)
    print("counted:", counted)
    assert counted.get("login:token", 0) >= 2  # the login, and the pull
    assert "denied:bad_credentials" not in counted
    assert_no_password_logged(login_cache)


def test_podman_pull_as_a_denied_user(login_podman: Podman, login_cache: RegcacheProcess) -> None:
    host = login_cache.host
    podman_login(login_podman, host, "bob", USERS["bob"])
    before = auth_counts(login_cache)

    with pytest.raises(CommandError) as denied:
        login_podman.pull("docker.io/library/small:1.0")
    print("podman pull, alice's repository as bob:", denied.value.output[-2000:])
    assert "the token does not grant this repository" in denied.value.output

    assert login_podman.podman("images", "--quiet").strip() == ""
    counted = since(before, login_cache)
    print("counted:", counted)
    assert counted.get("denied:wrong_scope", 0) >= 1
    assert "denied:bad_credentials" not in counted
    assert_no_password_logged(login_cache)


# -- pass-through credentials -----------------------------------------------------------------


@pytest.fixture(scope="module")
def passthrough_cache(
    basic_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegcacheProcess]:
    """regcache with no credentials of its own, in front of Distribution behind htpasswd, which
    knows alice only: each Docker user logs in with its own registry login."""
    entry = basic_upstream.entry("docker.io", creds=None, credentials="passthrough")
    work_dir = tmp_path_factory.mktemp("passthrough-regcache")
    proc = RegcacheProcess(
        with_json_logs({"default_upstream": "docker.io", "upstreams": [entry]}), work_dir=work_dir
    )
    proc.start()
    yield proc
    proc.stop()
    print(f"--- {proc!r} log (last 20000 chars) ---\n{proc.log_text()[-20000:]}")


def test_docker_logs_in_with_its_own_upstream_login(
    docker: Dockerd, passthrough_cache: RegcacheProcess, basic_upstream: Upstream, tmp_path: Path
) -> None:
    host = passthrough_cache.host
    user, password = BASIC_CREDS
    out = docker_as(docker, tmp_path / "alice", "login", "-u", user, "-p", password, host)
    assert "Login Succeeded" in out
    docker_as(docker, tmp_path / "alice", "pull", f"{host}/library/small:1.0")
    small = basic_upstream.images.small
    assert docker.image(f"{host}/library/small:1.0").id == small.config_digest

    # Everything is cached now; still, a login the registry refuses gets nothing.
    with pytest.raises(CommandError) as bob:
        docker_as(docker, tmp_path / "bob", "login", "-u", "bob", "-p", WRONG, host)
    assert "unauthorized" in bob.value.output
    with pytest.raises(CommandError) as anonymous:
        docker_as(docker, tmp_path / "anonymous", "pull", f"{host}/library/small:1.0")
    print("docker pull without a login:", anonymous.value.output)
    assert "unauthorized" in anonymous.value.output or "denied" in anonymous.value.output
    counted = auth_counts(passthrough_cache)
    assert counted["denied:bad_credentials"] >= 1
    assert counted["denied:upstream_refused"] >= 1
    log = passthrough_cache.log_text()
    assert "Traceback" not in log
    assert password not in log
    assert WRONG not in log
    docker.remove_all_images()
