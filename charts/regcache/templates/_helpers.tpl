{{/* Names and labels ------------------------------------------------------------------- */}}

{{- define "regcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; 52 characters at most, because the StatefulSet's pods add
     "-<ordinal>" and their PVCs "cache-<name>-<ordinal>", and a controller-revision-hash label
     must stay within 63. */}}
{{- define "regcache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "regcache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "regcache.labels" -}}
helm.sh/chart: {{ include "regcache.chart" . }}
{{ include "regcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: regcache
{{- end }}

{{- define "regcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "regcache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "regcache.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Fixed paths: the image's user, config and cache locations ------------------------------ */}}

{{- define "regcache.port" -}}5000{{- end }}
{{- define "regcache.configDir" -}}/etc/regcache{{- end }}
{{- define "regcache.cacheDir" -}}/var/lib/regcache{{- end }}
{{/* Upstream passwords: one file per upstream, named by regcache.credentialFile. */}}
{{- define "regcache.credentialsDir" -}}/run/secrets/regcache{{- end }}
{{/* Client logins (htpasswd, token-key) and TLS (tls.crt, tls.key, client-ca.crt): directories
     of their own, so that no upstream's credential file can take their names. */}}
{{- define "regcache.authDir" -}}/run/secrets/regcache-auth{{- end }}
{{- define "regcache.tlsDir" -}}/run/secrets/regcache-tls{{- end }}

{{/* Scaling --------------------------------------------------------------------------------- */}}

{{/* Whether the replicas can share one cache: blobs in a bucket and the index in Redis. Only
     then is the workload a Deployment; otherwise each pod's cache is its own volume. */}}
{{- define "regcache.shared" -}}
{{- if and (eq .Values.storage.backend "s3") (eq .Values.index.backend "redis") }}yes{{ end }}
{{- end }}

{{/* The replicas' signing key (replica.secret_file): the Secret and its key. */}}
{{- define "regcache.replicaDir" -}}/run/secrets/regcache-replica{{- end }}
{{- define "regcache.replicaSecret" -}}
{{- .Values.replica.existingSecret | default (printf "%s-replica" (include "regcache.fullname" .)) }}
{{- end }}
{{- define "regcache.replicaSecretKey" -}}
{{- ternary .Values.replica.existingSecretKey "secret" (not (empty .Values.replica.existingSecret)) }}
{{- end }}

{{/* The cache volume's bound with the shared backends: the spool, and the local tier if any. */}}
{{- define "regcache.spoolVolumeSize" -}}
{{- $s := .Values.storage }}
{{- if $s.localTier }}
{{- add (include "regcache.quantityBytes" $s.spoolSizeLimit | int64) (include "regcache.quantityBytes" $s.localTier | int64) }}
{{- else }}
{{- $s.spoolSizeLimit }}
{{- end }}
{{- end }}

{{/* The most pods that may run at once: what the token key rules must hold for. */}}
{{- define "regcache.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- max (int .Values.autoscaling.maxReplicas) (int .Values.replicaCount) }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* Several pods are only worth running when they share the cache: with a cache each, every
     replica fills its own from the upstreams and a client is served by whichever it reaches. */}}
{{- define "regcache.validateScaling" -}}
{{- $s3 := eq .Values.storage.backend "s3" }}
{{- $redis := eq .Values.index.backend "redis" }}
{{- $many := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- $what := ternary "autoscaling.enabled" (printf "replicaCount %d" (int .Values.replicaCount)) (.Values.autoscaling.enabled | default false) }}
{{- if and $many (not (and $s3 $redis)) }}
{{- if or $s3 $redis }}
{{- fail (printf "%s: replicas share a cache only when both shared backends are set, storage.backend s3 and index.backend redis; this has %s and %s. Set both, or run one replica" $what (ternary "storage.backend s3" "storage.backend local" $s3) (ternary "index.backend redis" "index.backend local" $redis)) }}
{{- else }}
{{- fail (printf "%s: with the local backends each replica would have a cache of its own; run one replica, or set storage.backend s3 and index.backend redis so that replicas share one" $what) }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas %d is above autoscaling.maxReplicas %d" (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- end }}
{{- if and .Values.storage.localTier (not $s3) }}
{{- fail "storage.localTier: a local tier keeps blobs of a bucket in front of it; it needs storage.backend s3" }}
{{- end }}
{{- if and $s3 (not .Values.storage.s3.bucket) }}
{{- fail "storage.s3.bucket: storage.backend s3 needs the bucket's name" }}
{{- end }}
{{- if $redis }}
{{- $r := .Values.index.redis }}
{{- if and $r.url $r.existingSecret }}
{{- fail "index.redis: give the URL either as index.redis.url or in index.redis.existingSecret, not both" }}
{{- end }}
{{- if not (or $r.url $r.existingSecret) }}
{{- fail "index.redis: index.backend redis needs the Redis: set index.redis.existingSecret (a Secret holding the URL) or index.redis.url" }}
{{- end }}
{{- /* The ConfigMap is readable by anyone who may read the namespace's ConfigMaps. */}}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" $r.url }}
{{- fail "index.redis.url: it carries a password, which would land in the ConfigMap; put the URL in a Secret and name it in index.redis.existingSecret" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Security switches ---------------------------------------------------------------------- */}}

{{- define "regcache.tls" -}}
{{- if .Values.tls.existingSecret }}yes{{ end }}
{{- end }}

{{/* Mutual TLS: the kubelet has no client certificate, so no HTTP probe can get in. */}}
{{- define "regcache.mtls" -}}
{{- if and .Values.tls.existingSecret .Values.tls.clientCa.existingSecret }}yes{{ end }}
{{- end }}

{{/* The container port's name: meshes and Ingress controllers read the protocol from it. */}}
{{- define "regcache.portName" -}}
{{- ternary "https" "http" (not (empty .Values.tls.existingSecret)) }}
{{- end }}

{{/* Whether the chart makes the htpasswd Secret: logins on, with the file given inline. */}}
{{- define "regcache.authSecret" -}}
{{- if and .Values.auth.enabled .Values.auth.htpasswd }}yes{{ end }}
{{- end }}

{{/* One probe's handler: https when regcache serves TLS; with mutual TLS only a TCP connect. */}}
{{- define "regcache.probe" -}}
{{- if include "regcache.mtls" .root }}
tcpSocket:
  port: {{ include "regcache.portName" .root }}
{{- else }}
httpGet:
  path: {{ .path }}
  port: {{ include "regcache.portName" .root }}
  {{- if include "regcache.tls" .root }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}

{{/* Upstreams ------------------------------------------------------------------------------ */}}

{{/* The upstreams regcache will know, as JSON ({"list": [...]}): config.upstreams, or regcache's
     built-in list when that is empty (proxy/config/model.py BUILTIN_UPSTREAMS). */}}
{{- define "regcache.upstreams" -}}
{{- $list := .Values.config.upstreams }}
{{- if not $list }}
{{- $list = list
    (dict "name" "docker.io" "url" "https://registry-1.docker.io")
    (dict "name" "ghcr.io" "url" "https://ghcr.io")
    (dict "name" "quay.io" "url" "https://quay.io")
    (dict "name" "registry.k8s.io" "url" "https://registry.k8s.io")
    (dict "name" "gcr.io" "url" "https://gcr.io")
    (dict "name" "public.ecr.aws" "url" "https://public.ecr.aws") }}
{{- end }}
{{- dict "list" $list | toJson }}
{{- end }}

{{/* The file (and chart Secret key) holding an upstream's password: its name, with ":" (from a
     port) made "_" because Secret keys allow only [-._a-zA-Z0-9]. */}}
{{- define "regcache.credentialFile" -}}
{{- . | replace ":" "_" }}
{{- end }}

{{/* Whether the chart makes a Secret: some upstream gives its password in the values. */}}
{{- define "regcache.chartSecret" -}}
{{- range .Values.config.upstreams }}{{ if .password }}yes{{ end }}{{ end }}
{{- end }}

{{/* Whether a credentials volume is needed: some upstream's password comes from a Secret. */}}
{{- define "regcache.credentialsVolume" -}}
{{- range .Values.config.upstreams }}{{ if or .password .existingSecret }}yes{{ end }}{{ end }}
{{- end }}

{{/* Render-time checks that the schema cannot express; each would otherwise make regcache
     exit at start (CrashLoopBackOff) with the same complaint. */}}
{{- define "regcache.validate" -}}
{{- $labels := dict }}
{{- $files := dict }}
{{- range $i, $up := (include "regcache.upstreams" . | fromJson).list }}
{{- range $label := prepend ($up.aliases | default list) $up.name }}
{{- if hasKey $labels $label }}
{{- fail (printf "config.upstreams[%d]: %q is already the name or an alias of another upstream; names and aliases must be unique" $i $label) }}
{{- end }}
{{- $_ := set $labels $label true }}
{{- end }}
{{- $file := include "regcache.credentialFile" $up.name }}
{{- if hasKey $files $file }}
{{- fail (printf "config.upstreams[%d]: %q and another upstream differ only by ':' and '_', which their credential files cannot" $i $up.name) }}
{{- end }}
{{- $_ := set $files $file true }}
{{- end }}
{{- include "regcache.validateScaling" . }}
{{- include "regcache.validateSecurity" . }}
{{- if not (hasKey $labels .Values.config.default_upstream) }}
{{- fail (printf "config.default_upstream: %q is not the name or an alias of any upstream (%s)" .Values.config.default_upstream (keys $labels | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}

{{/* What the schema cannot say about auth, access and tls; regcache's own refusals, or a
     setup that would start but fail its clients. */}}
{{/* Whether some upstream passes its clients' own logins through: regcache then issues
     tokens, which carry those logins sealed under the token key, with or without auth. */}}
{{- define "regcache.passthrough" -}}
{{- range .Values.config.upstreams }}{{ if eq (.credentials | default "configured") "passthrough" }}yes{{ end }}{{ end }}
{{- end }}

{{/* Whether the auth volume is mounted: the htpasswd file, the token key, or both. */}}
{{- define "regcache.authVolume" -}}
{{- if or .Values.auth.enabled (and (include "regcache.passthrough" .) .Values.auth.tokenKey.existingSecret) }}yes{{ end }}
{{- end }}

{{- define "regcache.validateSecurity" -}}
{{- $auth := .Values.auth }}
{{- $replicas := int (include "regcache.maxReplicas" .) }}
{{- $count := printf "replicaCount %d" $replicas }}
{{- if .Values.autoscaling.enabled }}
{{- $count = printf "autoscaling up to %d replicas" $replicas }}
{{- end }}
{{- if and (include "regcache.passthrough" .) (not $auth.enabled) (gt $replicas 1) (not $auth.tokenKey.existingSecret) }}
{{- fail (printf "auth.tokenKey.existingSecret: with passthrough upstreams and %s every pod must share the key that signs tokens and seals the logins in them; create a Secret holding 32+ random bytes and name it here" $count) }}
{{- end }}
{{- if $auth.enabled }}
{{- if and $auth.htpasswd $auth.existingSecret }}
{{- fail "auth: give the htpasswd file either inline (auth.htpasswd) or as auth.existingSecret, not both" }}
{{- end }}
{{- if not (or $auth.htpasswd $auth.existingSecret) }}
{{- fail "auth.enabled: logins need an htpasswd file: set auth.existingSecret (a Secret holding it) or auth.htpasswd" }}
{{- end }}
{{- if and (gt $replicas 1) (not $auth.tokenKey.existingSecret) }}
{{- fail (printf "auth.tokenKey.existingSecret: with %s every pod must sign tokens with the same key, or a token one pod issued is refused by the next; create a Secret holding 32+ random bytes and name it here" $count) }}
{{- end }}
{{- else }}
{{- if .Values.access }}
{{- fail "access: rules need logins: set auth.enabled (regcache refuses access rules without them)" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.clientCa.existingSecret (not .Values.tls.existingSecret) }}
{{- fail "tls.clientCa.existingSecret: mutual TLS needs TLS: set tls.existingSecret too" }}
{{- end }}
{{- end }}

{{/* The cache's size bound --------------------------------------------------------------- */}}

{{/* Bytes in a Kubernetes quantity such as 50Gi, 500G or 1.5Ti; fails on what it cannot read. */}}
{{- define "regcache.quantityBytes" -}}
{{- $q := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $suffix := trimPrefix $number $q }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "P" 1000000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "Pi" 1125899906842624 }}
{{- if or (not $number) (not (hasKey $units $suffix)) }}
{{- fail (printf "cannot read the size %q (use e.g. 50Gi or 500G), or set config.cache.max_size" $q) }}
{{- end }}
{{- mulf (float64 $number) (index $units $suffix) | floor | int64 }}
{{- end }}

{{/* config.cache.max_size, or persistence.maxSizePercent of the volume in whole MiB: the rest of
     the volume holds the index and the downloads under way. Empty for no bound. With blobs in
     a bucket the bound is the bucket's, which the volume's size says nothing about. */}}
{{- define "regcache.maxSize" -}}
{{- $p := .Values.persistence }}
{{- $volume := ternary $p.size $p.emptyDirSizeLimit $p.enabled }}
{{- if not (empty (toString .Values.config.cache.max_size)) }}
{{- .Values.config.cache.max_size }}
{{- else if and $volume (gt (int $p.maxSizePercent) 0) (eq .Values.storage.backend "local") }}
{{- $bytes := include "regcache.quantityBytes" $volume | float64 }}
{{- $mib := divf (mulf $bytes $p.maxSizePercent) (mul 100 1048576) | floor | int64 }}
{{- printf "%dMiB" (max $mib 1) }}
{{- end }}
{{- end }}

{{/* /etc/regcache/config.yaml ---------------------------------------------------------------
     Scalars go through toJson: JSON scalars are YAML, so nothing the values hold can change the
     document's structure, numbers stay numbers and booleans booleans (regcache refuses
     "300" as a tag_ttl), and Go never prints large numbers as 1e+06 this way. */}}
{{- define "regcache.config" -}}
{{- $c := .Values.config }}
{{- $credentials := include "regcache.credentialsDir" . -}}
# Rendered by the {{ include "regcache.chart" . }} Helm chart from its `config` values; every key
# is described in config/regcache.example.yaml. Keys not written here keep their defaults.
listen: "0.0.0.0:{{ include "regcache.port" . }}"
cache_dir: {{ include "regcache.cacheDir" . | toJson }}
default_upstream: {{ $c.default_upstream | toJson }}
log_level: {{ $c.log_level | toJson }}
log_format: {{ $c.log_format | toJson }}
event_loop: {{ $c.event_loop | toJson }}
offline: {{ $c.offline | toJson }}
{{- $maxSize := include "regcache.maxSize" . }}
{{- $maxAge := toString ($c.cache.max_age | default "") }}
{{- if or $maxSize $maxAge }}
cache:
  {{- if $maxSize }}
  max_size: {{ $maxSize | toJson }}
  {{- end }}
  {{- if $maxAge }}
  max_age: {{ $maxAge | toJson }}
  {{- end }}
{{- end }}
{{- with $c.upstreams }}
upstreams:
  {{- range . }}
  - name: {{ .name | toJson }}
    url: {{ .url | toJson }}
    {{- with .aliases }}
    aliases: {{ . | toJson }}
    {{- end }}
    {{- $up := . }}
    {{- range $key := list "tag_ttl" "tls_verify" "connect_timeout" "read_timeout" "serve_stale_on_not_found" "allow_private_redirects" "credentials" "passthrough_ttl" }}
    {{- if hasKey $up $key }}
    {{ $key }}: {{ index $up $key | toJson }}
    {{- end }}
    {{- end }}
    {{- if .username }}
    username: {{ .username | toJson }}
    {{- if or .password .existingSecret }}
    password_file: {{ printf "%s/%s" $credentials (include "regcache.credentialFile" .name) | toJson }}
    {{- else }}
    password_file: {{ .password_file | toJson }}
    {{- end }}
    {{- end }}
  {{- end }}
{{- end }}
{{- include "regcache.backendsConfig" . }}
{{- include "regcache.securityConfig" . }}
{{- end }}

{{/* The storage: and index: keys. Keys come as mounted files and a Redis URL holding a password
     as an environment variable: neither may be in the ConfigMap. */}}
{{- define "regcache.s3Dir" -}}/run/secrets/regcache-s3{{- end }}
{{- define "regcache.backendsConfig" -}}
{{- $s3 := .Values.storage.s3 }}
{{- if eq .Values.storage.backend "s3" }}
storage:
  backend: "s3"
  s3:
    bucket: {{ $s3.bucket | toJson }}
    {{- range $key := list "endpoint" "region" "prefix" }}
    {{- with index $s3 $key }}
    {{ $key }}: {{ . | toJson }}
    {{- end }}
    {{- end }}
    {{- if $s3.existingSecret }}
    access_key_id_file: {{ printf "%s/access-key-id" (include "regcache.s3Dir" .) | toJson }}
    secret_access_key_file: {{ printf "%s/secret-access-key" (include "regcache.s3Dir" .) | toJson }}
    {{- end }}
  {{- with .Values.storage.localTier }}
  local_tier: {{ include "regcache.quantityBytes" . | toJson }}
  {{- end }}
{{- end }}
{{- if include "regcache.shared" . }}
# Each pod's name and address come from its environment (REGCACHE_REPLICA_NAME,
# REGCACHE_REPLICA_ADVERTISE_URL); the key they sign their requests to each other with is shared.
replica:
  secret_file: {{ printf "%s/secret" (include "regcache.replicaDir" .) | toJson }}
{{- end }}
{{- if eq .Values.index.backend "redis" }}
{{- $r := .Values.index.redis }}
index:
  backend: "redis"
  redis:
    {{- if $r.url }}
    url: {{ $r.url | toJson }}
    {{- end }}
    prefix: {{ $r.prefix | toJson }}
{{- end }}
{{- end }}

{{/* The auth:, access: and tls: keys of config.yaml; the files are the mounted Secrets'. */}}
{{- define "regcache.securityConfig" -}}
{{- $auth := .Values.auth }}
{{- $authDir := include "regcache.authDir" . }}
{{- $tlsDir := include "regcache.tlsDir" . }}
{{- if $auth.enabled }}
auth:
  htpasswd: {{ printf "%s/htpasswd" $authDir | toJson }}
  anonymous: {{ $auth.anonymous | toJson }}
  token_ttl: {{ $auth.tokenTtl | toJson }}
  {{- if $auth.tokenKey.existingSecret }}
  token_key_file: {{ printf "%s/token-key" $authDir | toJson }}
  {{- end }}
{{- else if include "regcache.authVolume" . }}
auth:
  token_key_file: {{ printf "%s/token-key" $authDir | toJson }}
{{- end }}
{{- if $auth.enabled }}
{{- with .Values.access }}
access:
  {{- range . }}
  - repositories: {{ .repositories | toJson }}
    users: {{ .users | toJson }}
  {{- end }}
{{- end }}
{{- end }}
{{- if include "regcache.tls" . }}
tls:
  cert_file: {{ printf "%s/tls.crt" $tlsDir | toJson }}
  key_file: {{ printf "%s/tls.key" $tlsDir | toJson }}
  {{- if .Values.tls.clientCa.existingSecret }}
  client_ca_file: {{ printf "%s/client-ca.crt" $tlsDir | toJson }}
  {{- end }}
{{- end }}
{{- end }}
