"""The chart's replicas of the shared backends: each pod a replica named after itself,
advertised on its pod IP, signing its requests to the others with a key from one Secret; and
each pod's local tier in front of the bucket (storage.localTier). Rendered with real helm, and
the config read by regcache's own loader with the files and variables the pod would have.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from proxy.config import CliOverrides, Config, load_config
from tests.support.chart import (
    POD_FIELDS,
    RELEASE,
    SHARED_BACKENDS,
    Chart,
    Rendered,
    pod_env,
    pod_files,
)

FULLNAME = f"{RELEASE}-regcache"
GIB = 2**30
REPLICA_KEY = "k" * 40


def shared(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {**SHARED_BACKENDS, "replicaCount": 3}
    values["storage"] = {**values["storage"], "spoolSizeLimit": "8Gi"}
    values.update(changes)
    return values


def load(
    rendered: Rendered, root: Path, secrets: dict[str, dict[str, str]] | None = None
) -> Config:
    path = pod_files(rendered, root, secrets or {})
    return load_config(path, pod_env(rendered, secrets or {}), CliOverrides())


def volume(rendered: Rendered, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in rendered.pod_spec["volumes"] if v["name"] == name)
    return found


def env_names(rendered: Rendered) -> list[str]:
    return [v["name"] for v in rendered.container.get("env", [])]


# -- the replica settings -------------------------------------------------------------------


def test_each_pod_is_a_replica_named_after_itself_advertised_on_its_address(
    chart: Chart, tmp_path: Path
) -> None:
    rendered = chart.render(shared())
    env = {v["name"]: v for v in rendered.container["env"]}
    assert env["REGCACHE_REPLICA_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # POD_IP before the URL that names it: the kubelet expands only variables defined above.
    assert env_names(rendered).index("POD_IP") < env_names(rendered).index(
        "REGCACHE_REPLICA_ADVERTISE_URL"
    )
    config = load(rendered, tmp_path / "pod")
    assert config.replica == POD_FIELDS["metadata.name"]
    assert config.replica_advertise_url == "http://10.1.2.3:5000"
    assert config.replica_secret_file is not None
    # The chart made the key: 48 random letters and digits, the same file on every pod.
    assert re.fullmatch(rb"[A-Za-z0-9]{48}", config.replica_secret_file.secret)


def test_the_chart_made_key_is_a_secret_mounted_read_only(
    chart: Chart,
) -> None:
    rendered = chart.render(shared())
    secret = rendered.one("Secret", f"{FULLNAME}-replica")
    key = base64.b64decode(secret["data"]["secret"])
    assert len(key) == 48
    assert volume(rendered, "replica")["projected"] == {
        "defaultMode": 0o440,
        "sources": [
            {
                "secret": {
                    "name": f"{FULLNAME}-replica",
                    "items": [{"key": "secret", "path": "secret"}],
                }
            }
        ],
    }
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert mounts["replica"] == {
        "name": "replica",
        "mountPath": "/run/secrets/regcache-replica",
        "readOnly": True,
    }
    assert rendered.config["replica"] == {"secret_file": "/run/secrets/regcache-replica/secret"}


def test_an_existing_secret_holds_the_key_instead(chart: Chart, tmp_path: Path) -> None:
    values = shared(replica={"existingSecret": "fleet-key", "existingSecretKey": "signing"})
    rendered = chart.render(values)
    assert rendered.all("Secret") == []
    sources = volume(rendered, "replica")["projected"]["sources"]
    assert sources == [
        {"secret": {"name": "fleet-key", "items": [{"key": "signing", "path": "secret"}]}}
    ]
    config = load(rendered, tmp_path / "pod", {"fleet-key": {"signing": REPLICA_KEY}})
    assert config.replica_secret_file is not None
    assert config.replica_secret_file.secret == REPLICA_KEY.encode()


def test_with_tls_the_replicas_reach_each_other_over_https(chart: Chart) -> None:
    rendered = chart.render(shared(tls={"existingSecret": "regcache-tls"}))
    env = pod_env(rendered, {})
    assert env["REGCACHE_REPLICA_ADVERTISE_URL"] == "https://10.1.2.3:5000"


def test_the_local_backends_have_no_replica_settings(chart: Chart) -> None:
    rendered = chart.render({})
    assert "env" not in rendered.container
    assert "replica" not in rendered.config
    assert "replica" not in [v["name"] for v in rendered.pod_spec["volumes"]]
    assert rendered.all("Secret") == []
    # One pod on a bucket with its index on its volume: a StatefulSet, not a fleet.
    alone = chart.render({"storage": SHARED_BACKENDS["storage"]})
    assert "replica" not in alone.config
    assert alone.all("Secret") == []


# -- the local tier -------------------------------------------------------------------------


def test_the_local_tier_reaches_regcache_and_the_spool_volume_grows_by_it(
    chart: Chart, tmp_path: Path
) -> None:
    values = shared()
    values["storage"]["localTier"] = "20Gi"
    rendered = chart.render(values)
    assert rendered.config["storage"]["local_tier"] == str(20 * GIB)
    assert load(rendered, tmp_path / "pod").storage_local_tier == 20 * GIB
    # The spool's 8Gi and the tier's 20Gi: the emptyDir must hold both, or the pod is evicted.
    assert volume(rendered, "cache")["emptyDir"] == {"sizeLimit": str(28 * GIB)}

    without = chart.render(shared())
    assert "local_tier" not in without.config["storage"]
    assert volume(without, "cache")["emptyDir"] == {"sizeLimit": "8Gi"}
    assert load(without, tmp_path / "without").storage_local_tier is None


def test_one_pod_on_a_bucket_keeps_its_tier_on_its_volume(chart: Chart, tmp_path: Path) -> None:
    storage = {**SHARED_BACKENDS["storage"], "localTier": "1.5Gi"}
    rendered = chart.render({"storage": storage})
    assert rendered.config["storage"]["local_tier"] == str(3 * GIB // 2)
    assert [
        c["metadata"]["name"] for c in rendered.statefulset["spec"]["volumeClaimTemplates"]
    ] == ["cache"]
    assert load(rendered, tmp_path / "pod").storage_local_tier == 3 * GIB // 2


def test_a_local_tier_needs_a_bucket_and_a_size(chart: Chart) -> None:
    error = chart.render_error({"storage": {"backend": "local", "localTier": "10Gi"}})
    assert "storage.localTier: a local tier keeps blobs of a bucket in front of it" in error
    assert "localTier" in chart.render_error(shared(storage={"backend": "s3", "localTier": "lots"}))
    assert "existingSecret" in chart.render_error(shared(replica={"existingSecret": "Not_A_Name"}))
    assert "secretName" in chart.render_error(shared(replica={"secretName": "x"}))
