"""The chart with the shared backends (blobs in S3, the index in Redis): a Deployment that may
be scaled, by hand or by a HorizontalPodAutoscaler, where the local backends keep the one-pod
StatefulSet. Rendered with real helm, validated strictly, and the config read by regcache's own
loader with the Secret files and variables the pod would have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy.config import CliOverrides, Config, load_config
from tests.support.chart import (
    KUBE_VERSIONS,
    RELEASE,
    SHARED_BACKENDS,
    Chart,
    Rendered,
    kubernetes_validate,
    pod_env,
    pod_files,
)

FULLNAME = f"{RELEASE}-regcache"
REDIS_PASSWORD = "redis-password-from-vault"
REDIS_URL = f"redis://:{REDIS_PASSWORD}@redis.storage.svc:6379/2"
S3_KEY_ID = "AKIDSHAREDTEST"
S3_SECRET = "s3-secret-from-vault"

# What the Secrets the values name would hold in the cluster.
SECRETS = {
    "regcache-s3": {"key-id": S3_KEY_ID, "secret-key": S3_SECRET},
    "regcache-redis": {"redis-url": REDIS_URL},
    "token-key": {"token-key": "t" * 48},
}


def shared(**changes: Any) -> dict[str, Any]:
    """Three replicas on a MinIO bucket and a Redis with a password, keys from Secrets."""
    values: dict[str, Any] = {
        "replicaCount": 3,
        "storage": {
            "backend": "s3",
            "s3": {
                "endpoint": "http://minio.storage.svc:9000",
                "bucket": "regcache",
                "region": "us-east-1",
                "prefix": "cache/",
                "existingSecret": "regcache-s3",
                "accessKeyIdKey": "key-id",
                "secretAccessKeyKey": "secret-key",
            },
            "spoolSizeLimit": "8Gi",
        },
        "index": {
            "backend": "redis",
            "redis": {
                "existingSecret": "regcache-redis",
                "existingSecretKey": "redis-url",
                "prefix": "fleet:",
            },
        },
    }
    values.update(changes)
    return values


AUTOSCALED = {
    "enabled": True,
    "minReplicas": 2,
    "maxReplicas": 8,
    "targetCPUUtilizationPercentage": 65,
}


def load(rendered: Rendered, root: Path, secrets: dict[str, dict[str, str]] = SECRETS) -> Config:
    """What regcache makes of the config in the pod: the files and the variables."""
    path = pod_files(rendered, root, secrets)
    return load_config(path, pod_env(rendered, secrets), CliOverrides())


def volume(rendered: Rendered, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in rendered.pod_spec["volumes"] if v["name"] == name)
    return found


# -- the objects --------------------------------------------------------------------------------


def test_shared_backends_make_a_deployment_with_a_peer_service_and_no_volume_claims(
    chart: Chart,
) -> None:
    rendered = chart.render(shared())
    assert rendered.all("StatefulSet") == []
    assert rendered.all("PersistentVolumeClaim") == []
    deployment = rendered.one("Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 3
    assert "volumeClaimTemplates" not in deployment["spec"]
    assert rendered.all("HorizontalPodAutoscaler") == []

    peers = rendered.one("Service", f"{FULLNAME}-headless")
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert peers["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert peers["spec"]["ports"] == [
        {"name": "peer", "port": 5000, "targetPort": "http", "protocol": "TCP"}
    ]
    # The cache directory only spools downloads: a bounded emptyDir.
    assert volume(rendered, "cache") == {"name": "cache", "emptyDir": {"sizeLimit": "8Gi"}}


def test_autoscaling_adds_an_hpa_that_owns_the_replica_count(chart: Chart) -> None:
    rendered = chart.render(shared(autoscaling=AUTOSCALED))
    deployment = rendered.one("Deployment", FULLNAME)
    # A replicas field would fight the HPA on every `helm upgrade`.
    assert "replicas" not in deployment["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["maxReplicas"] == 8
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 65},
    }


@pytest.mark.parametrize("autoscaling", [False, True], ids=["fixed", "autoscaled"])
def test_shared_manifests_validate_strictly(
    chart: Chart, tmp_path: Path, autoscaling: bool
) -> None:
    values = shared(
        autoscaling={**AUTOSCALED, "enabled": autoscaling},
        auth={
            "enabled": True,
            "existingSecret": "logins",
            "tokenKey": {"existingSecret": "token-key"},
        },
        networkPolicy={"enabled": True},
        ingress={"enabled": True},
        serviceMonitor={"enabled": True},
    )
    path = tmp_path / "shared.yaml"
    path.write_text(chart.template_text(values))
    for kube_version in KUBE_VERSIONS:
        kubernetes_validate([path], kube_version)


def test_one_replica_with_one_shared_backend_keeps_the_statefulset(chart: Chart) -> None:
    # Blobs in a bucket with the index on the pod's volume: allowed, for one pod.
    rendered = chart.render({"storage": SHARED_BACKENDS["storage"]})
    assert [
        c["metadata"]["name"] for c in rendered.statefulset["spec"]["volumeClaimTemplates"]
    ] == ["cache"]
    assert rendered.config["storage"]["backend"] == "s3"
    assert "index" not in rendered.config
    # max_size bounds the bucket then: 90% of the volume would be a meaningless bound.
    assert "cache" not in rendered.config


def test_network_policy_lets_in_the_peers_and_out_to_the_bucket_and_redis(chart: Chart) -> None:
    values = shared(
        networkPolicy={"enabled": True, "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}
    )
    spec = chart.render(values).one("NetworkPolicy")["spec"]
    own_pods = {"podSelector": {"matchLabels": spec["podSelector"]["matchLabels"]}}
    [ingress] = spec["ingress"]
    assert own_pods in ingress["from"]
    _dns, ports, peers = spec["egress"]
    # 443 for the upstreams, the MinIO endpoint's 9000, Redis's 6379 (its URL is in a Secret).
    assert [p["port"] for p in ports["ports"]] == [443, 6379, 9000]
    assert peers == {"to": [own_pods], "ports": [{"port": "http", "protocol": "TCP"}]}

    values["storage"]["s3"]["endpoint"] = ""
    values["index"]["redis"] = {"url": "rediss://redis.storage.svc:6380/0"}
    _, ports, _ = chart.render(values).one("NetworkPolicy")["spec"]["egress"]
    assert [p["port"] for p in ports["ports"]] == [443, 6380]


# -- what regcache loads ------------------------------------------------------------------------


def test_rendered_config_loads_with_the_shared_backends_and_the_secrets(
    chart: Chart, tmp_path: Path
) -> None:
    rendered = chart.render(shared())
    config = load(rendered, tmp_path / "pod")
    assert config.storage_backend == "s3"
    assert config.storage_s3_endpoint == "http://minio.storage.svc:9000"
    assert config.storage_s3_bucket == "regcache"
    assert config.storage_s3_region == "us-east-1"
    assert config.storage_s3_prefix == "cache/"
    assert config.storage_s3_access_key_id == S3_KEY_ID
    assert config.storage_s3_secret_access_key == S3_SECRET
    assert config.index_backend == "redis"
    assert config.index_redis_url == REDIS_URL
    assert config.index_redis_prefix == "fleet:"
    # The bound is the bucket's, from config.cache.max_size; the spool volume says nothing of it.
    assert config.cache_max_size is None


def test_without_an_s3_secret_regcache_uses_the_aws_chain(chart: Chart, tmp_path: Path) -> None:
    values = shared()
    values["storage"]["s3"]["existingSecret"] = ""
    values["index"]["redis"] = {"url": "rediss://redis.storage.svc:6380/0"}
    rendered = chart.render(values)
    assert "s3" not in [v["name"] for v in rendered.pod_spec["volumes"]]
    assert not [v for v in rendered.container["env"] if "secretKeyRef" in v.get("valueFrom", {})]
    config = load(rendered, tmp_path / "pod", {})
    assert config.storage_s3_access_key_id is None
    assert config.storage_s3_secret_access_key is None
    assert config.index_redis_url == "rediss://redis.storage.svc:6380/0"


def test_explicit_max_size_bounds_the_bucket(chart: Chart, tmp_path: Path) -> None:
    rendered = chart.render(shared(config={"cache": {"max_size": "2TiB"}}))
    assert rendered.config["cache"] == {"max_size": "2TiB"}
    assert load(rendered, tmp_path / "pod").cache_max_size == 2 * 2**40


def test_secrets_stay_out_of_the_configmap_and_reach_the_pod_as_files_and_a_variable(
    chart: Chart,
) -> None:
    rendered = chart.render(shared())
    assert "url" not in rendered.config["index"]["redis"]
    for doc in rendered.docs:
        text = json.dumps(doc)
        for secret in (REDIS_PASSWORD, S3_KEY_ID, S3_SECRET):
            assert secret not in text, doc["kind"]
    [variable] = [v for v in rendered.container["env"] if "secretKeyRef" in v.get("valueFrom", {})]
    assert variable == {
        "name": "REGCACHE_INDEX_REDIS_URL",
        "valueFrom": {"secretKeyRef": {"name": "regcache-redis", "key": "redis-url"}},
    }
    assert volume(rendered, "s3")["projected"] == {
        "defaultMode": 0o440,
        "sources": [
            {
                "secret": {
                    "name": "regcache-s3",
                    "items": [
                        {"key": "key-id", "path": "access-key-id"},
                        {"key": "secret-key", "path": "secret-access-key"},
                    ],
                }
            }
        ],
    }
    mounts = {m["name"]: m for m in rendered.container["volumeMounts"]}
    assert mounts["s3"] == {"name": "s3", "mountPath": "/run/secrets/regcache-s3", "readOnly": True}
    writable = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
    assert writable == ["/var/lib/regcache"]


def test_a_missing_secret_key_fails_as_it_would_in_the_pod(chart: Chart, tmp_path: Path) -> None:
    # Guard: pod_files and pod_env must not invent what the cluster lacks.
    rendered = chart.render(shared())
    with pytest.raises(KeyError):
        load(rendered, tmp_path / "a", {**SECRETS, "regcache-redis": {"url": REDIS_URL}})
    with pytest.raises(KeyError):
        load(rendered, tmp_path / "b", {**SECRETS, "regcache-s3": {"key-id": S3_KEY_ID}})


def test_notes_say_the_replicas_share_the_cache_and_downloads(chart: Chart) -> None:
    notes = chart.notes(shared(autoscaling=AUTOSCALED))
    assert "2 to 8 pods (HorizontalPodAutoscaler) sharing one cache" in notes
    assert "bucket regcache" in notes
    assert "fetched\nfrom the upstream once, by the pod that took its lease" in notes
    assert f"rollout status deployment/{FULLNAME}" in notes


# -- refusing what would not work -------------------------------------------------------------


LOCAL_ONLY = "with the local backends each replica would have a cache of its own"
BOTH_NEEDED = "replicas share a cache only when both shared backends are set"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 2}, f"replicaCount 2: {LOCAL_ONLY}"),
        ({"autoscaling": AUTOSCALED}, f"autoscaling.enabled: {LOCAL_ONLY}"),
        (
            {"replicaCount": 2, "storage": SHARED_BACKENDS["storage"]},
            f"replicaCount 2: {BOTH_NEEDED}, storage.backend s3 and index.backend redis; "
            "this has storage.backend s3 and index.backend local",
        ),
        (
            {"autoscaling": AUTOSCALED, "index": SHARED_BACKENDS["index"]},
            f"autoscaling.enabled: {BOTH_NEEDED}, storage.backend s3 and index.backend redis; "
            "this has storage.backend local and index.backend redis",
        ),
        (
            shared(autoscaling={**AUTOSCALED, "minReplicas": 9}),
            "autoscaling.minReplicas 9 is above autoscaling.maxReplicas 8",
        ),
        (
            {**SHARED_BACKENDS, "storage": {"backend": "s3"}},
            "storage.s3.bucket: storage.backend s3 needs the bucket's name",
        ),
        (
            {**SHARED_BACKENDS, "index": {"backend": "redis"}},
            "index.backend redis needs the Redis",
        ),
        (
            {**SHARED_BACKENDS, "index": {"backend": "redis", "redis": {"url": REDIS_URL}}},
            "index.redis.url: it carries a password, which would land in the ConfigMap",
        ),
        (
            shared(
                index={
                    "backend": "redis",
                    "redis": {"url": "redis://r:6379", "existingSecret": "r"},
                }
            ),
            "not both",
        ),
        # Several pods must share the token key, however many the HPA may start.
        (
            shared(
                replicaCount=1,
                autoscaling=AUTOSCALED,
                auth={"enabled": True, "existingSecret": "logins"},
            ),
            "auth.tokenKey.existingSecret: with autoscaling up to 8 replicas every pod",
        ),
    ],
)
def test_settings_that_cannot_work_fail_the_render(
    chart: Chart, values: dict[str, Any], complaint: str
) -> None:
    assert complaint in chart.render_error(values)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"storage": {"backend": "gcs"}}, "backend"),
        ({"storage": {"s3": {"bucekt": "regcache"}}}, "bucekt"),
        ({"storage": {"s3": {"endpoint": "minio:9000"}}}, "endpoint"),
        ({"storage": {"s3": {"accessKeyId": "AKID"}}}, "accessKeyId"),
        ({"storage": {"spoolSizeLimit": "lots"}}, "spoolSizeLimit"),
        ({"index": {"backend": "memcached"}}, "backend"),
        ({"index": {"redis": {"password": "x"}}}, "password"),
        ({"index": {"redis": {"url": "http://redis:6379"}}}, "url"),
        ({"index": {"redis": {"prefix": ""}}}, "prefix"),
        ({"autoscaling": {"maxReplica": 4}}, "maxReplica"),
        ({"autoscaling": {"minReplicas": 0}}, "minReplicas"),
    ],
)
def test_schema_refuses_typos_and_bad_values(
    chart: Chart, values: dict[str, Any], complaint: str
) -> None:
    assert complaint in chart.render_error(values)
