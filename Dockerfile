# regcache container image.
#
#   docker build -t regcache .
#   docker run -d -p 5000:5000 -v regcache-cache:/var/lib/regcache regcache
#
# Both stages use the same base, so what the first stage builds runs on the second. Pin it by
# digest for reproducible builds:
#   docker build --build-arg BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:<digest> .
# Any Debian-like image whose `python3` is 3.11 or newer with the venv module will do (the
# image test builds on a debootstrapped Debian 12 with python3 and python3-venv).
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# --- build: wheels for regcache and all its dependencies ------------------------------------
FROM ${BASE_IMAGE} AS build
WORKDIR /src
# Only what the wheel is made of (pyproject.toml names README.md as the long description);
# .dockerignore keeps everything else out of the build context.
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# A wheel for every dependency too: the runtime stage then installs without an index and
# without a compiler, even for a dependency that ships no wheel for this platform.
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels '.[uvloop]'

# --- runtime ----------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="regcache" \
      org.opencontainers.image.description="Pull-through caching proxy for container registries" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (the Helm chart makes it so);
# pip has compiled the modules at install time anyway.
ENV PATH=/opt/regcache/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed UID/GID so that volume ownership and Kubernetes' runAsUser/fsGroup can name it.
# --no-log-init: with a high UID, lastlog/faillog would otherwise become huge sparse files.
RUN groupadd --gid 10001 regcache \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin regcache

COPY --from=build /wheels /tmp/wheels
# A venv keeps regcache apart from the base's Python packages (and from Debian's
# "externally managed" system Python). pip and setuptools are only needed to install: they go.
RUN python3 -m venv /opt/regcache \
    && /opt/regcache/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
       'regcache[uvloop]' \
    && /opt/regcache/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && rm -rf /tmp/wheels \
    && regcache --version

# The default configuration: every key not named here keeps its built-in default (see
# config/regcache.example.yaml). Mount another file over it, or set REGCACHE_* variables.
# The cache directory is made here, owned by regcache, so that a new named volume mounted on
# it inherits that ownership.
RUN mkdir -p /etc/regcache /var/lib/regcache \
    && printf '%s\n' \
       '# regcache in a container: listen on every interface, cache in the volume.' \
       '# Every other key keeps its built-in default (config/regcache.example.yaml).' \
       'listen: "0.0.0.0:5000"' \
       'cache_dir: /var/lib/regcache' \
       > /etc/regcache/config.yaml \
    && chown 10001:10001 /var/lib/regcache \
    && chmod 0750 /var/lib/regcache

VOLUME ["/var/lib/regcache"]
EXPOSE 5000
USER 10001:10001

# No curl in the image: Python asks /healthz (proxy/healthcheck.py), over http and then over
# https without verifying the certificate, since the question is only whether this container's
# regcache answers, whichever way TLS is set. The port follows REGCACHE_LISTEN when that is set
# (as for `docker run -e REGCACHE_LISTEN=0.0.0.0:8080`). Each attempt may take 4 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python3", "-m", "proxy.healthcheck"]

ENTRYPOINT ["regcache"]
CMD ["serve", "--config", "/etc/regcache/config.yaml"]
