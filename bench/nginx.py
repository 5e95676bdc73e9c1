"""The nginx peer's configuration: a blob cache keyed by digest in front of the upstream.

This is the "plain nginx" a team would set up instead of a registry-aware proxy:

* blobs (``/v2/<any repo>/blobs/sha256:...``) are cached under their digest alone, so the same
  blob pulled through two repositories is one cache entry, and kept for a year (a digest's
  content never changes);
* ``proxy_cache_lock`` with a lock timeout and lock age far beyond any download makes
  concurrent misses of one blob wait for the first download instead of each going upstream;
* everything else under ``/v2/`` (the API ping, manifests by tag *and* by digest, tag lists) is
  passed through uncached: a tag can move at any time and nginx cannot revalidate it the way a
  registry-aware cache does, so its tag resolution costs one upstream round trip.
"""

from __future__ import annotations

import os
from pathlib import Path

HEALTH_PATH = "/bench-nginx-health"
# Far beyond a 200 MB download on loopback: a lock that expires lets waiters go upstream.
_LOCK_SECONDS = "1h"


def render_config(
    *, prefix: Path, cache_dir: Path, listen_port: int, upstream_host: str, workers: str = "auto"
) -> str:
    """nginx.conf for ``nginx -c CONF -p PREFIX -g 'daemon off;'``; every path under prefix."""
    p = prefix
    # As root the workers would otherwise drop to "nobody", who cannot write the cache and temp
    # directories this run created with mode 0700; as another user the directive is an error.
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""\
{user}
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    # Per worker, upstream connections included: the scale bench holds 10,000 idle clients,
    # and the accepting worker may take most of them.
    worker_connections 16384;
}}

http {{
    log_format bench '$remote_addr "$request" $status $body_bytes_sent '
                     'cache=$upstream_cache_status rt=$request_time';
    access_log {p}/access.log bench;
    client_body_temp_path {p}/client_body;
    proxy_temp_path {p}/proxy_temp;
    fastcgi_temp_path {p}/fastcgi_temp;
    uwsgi_temp_path {p}/uwsgi_temp;
    scgi_temp_path {p}/scgi_temp;

    default_type application/octet-stream;
    # The production defaults for serving files; off is nginx's compiled-in default.
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;

    # use_temp_path=off: downloads land in the cache directory and are renamed into place.
    proxy_cache_path {cache_dir} levels=1:2 keys_zone=blobs:16m max_size=64g inactive=365d
                     use_temp_path=off;

    upstream registry {{
        server {upstream_host};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{listen_port};

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        # Keep the client's Host so absolute URLs the registry builds point back here.
        proxy_set_header Host $http_host;
        # Accept (and every other client header) is passed by default; said for the reader.
        proxy_pass_request_headers on;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;

        location = {HEALTH_PATH} {{
            access_log off;
            return 200 "ok\\n";
        }}

        # Quoted: the braces of {{64}} would otherwise end the directive.
        location ~ "^/v2/.+/blobs/(?<blob_digest>sha256:[0-9a-f]{{64}})$" {{
            proxy_pass http://registry;
            proxy_cache blobs;
            proxy_cache_key $blob_digest;
            proxy_cache_valid 200 206 1y;
            # The upstream's Cache-Control must not override the rule above.
            proxy_ignore_headers Cache-Control Expires Set-Cookie X-Accel-Expires;
            proxy_cache_lock on;
            proxy_cache_lock_timeout {_LOCK_SECONDS};
            proxy_cache_lock_age {_LOCK_SECONDS};
            add_header X-Cache-Status $upstream_cache_status always;
        }}

        location /v2/ {{
            proxy_pass http://registry;
        }}
    }}
}}
"""
