"""WWW-Authenticate challenges as real registries send them, and garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.upstream.challenge import Challenge, parse_challenge

param_names = st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True)
param_values = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


def quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/nginx:pull"',
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/nginx:pull",
                },
            ),
            id="docker-hub",
        ),
        pytest.param(
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
            'scope="repository:user/image:pull"',
            Challenge(
                "bearer",
                {
                    "realm": "https://ghcr.io/token",
                    "service": "ghcr.io",
                    "scope": "repository:user/image:pull",
                },
            ),
            id="ghcr",
        ),
        pytest.param(
            'Bearer realm="https://quay.io/v2/auth",service="quay.io"',
            Challenge("bearer", {"realm": "https://quay.io/v2/auth", "service": "quay.io"}),
            id="quay",
        ),
        pytest.param(
            'Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws"',
            Challenge(
                "bearer",
                {
                    "realm": "https://public.ecr.aws/token/",
                    "service": "public.ecr.aws",
                    "scope": "aws",
                },
            ),
            id="public-ecr",
        ),
        pytest.param(
            'Basic realm="Registry Realm"',
            Challenge("basic", {"realm": "Registry Realm"}),
            id="distribution-basic",
        ),
        pytest.param(
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/nginx:pull",error="insufficient_scope"',
            Challenge(
                "bearer",
                {
                    "realm": "https://auth.docker.io/token",
                    "service": "registry.docker.io",
                    "scope": "repository:library/nginx:pull",
                    "error": "insufficient_scope",
                },
            ),
            id="docker-hub-insufficient-scope",
        ),
        pytest.param(
            'Bearer realm="https://r.example/token",scope="repository:a:pull,push"',
            Challenge(
                "bearer",
                {"realm": "https://r.example/token", "scope": "repository:a:pull,push"},
            ),
            id="comma-inside-quotes",
        ),
        pytest.param(
            'Bearer realm="https://r.example/token",scope="repository:a:pull repository:b:pull"',
            Challenge(
                "bearer",
                {
                    "realm": "https://r.example/token",
                    "scope": "repository:a:pull repository:b:pull",
                },
            ),
            id="space-separated-scopes",
        ),
        pytest.param(
            r'Basic realm="say \"hi\" \\ bye"',
            Challenge("basic", {"realm": 'say "hi" \\ bye'}),
            id="escaped-quotes-and-backslash",
        ),
        pytest.param(
            "Bearer realm=https://r.example/token,service=r.example",
            Challenge("bearer", {"realm": "https://r.example/token", "service": "r.example"}),
            id="unquoted-tokens",
        ),
        pytest.param(
            '  Bearer   realm = "https://r.example/token" ,  service="r.example"  ',
            Challenge("bearer", {"realm": "https://r.example/token", "service": "r.example"}),
            id="optional-whitespace",
        ),
        pytest.param(
            'BEARER Realm="https://R.example/Token",SERVICE="R"',
            Challenge("bearer", {"realm": "https://R.example/Token", "service": "R"}),
            id="case-insensitive-names-case-kept-values",
        ),
        pytest.param('Bearer realm=""', Challenge("bearer", {"realm": ""}), id="empty-value"),
        pytest.param("Basic", Challenge("basic", {}), id="scheme-only"),
        pytest.param(
            'Bearer realm="https://a/token",service="a", Basic realm="fallback"',
            Challenge("bearer", {"realm": "https://a/token", "service": "a"}),
            id="second-challenge-ignored",
        ),
        pytest.param(
            'Basic realm="b", Bearer realm="https://a/token"',
            Challenge("basic", {"realm": "b"}),
            id="first-challenge-wins",
        ),
    ],
)
def test_real_world_headers(header: str, expected: Challenge) -> None:
    assert parse_challenge(header) == expected


def test_realm_property() -> None:
    assert parse_challenge('Bearer realm="https://a/token"').realm == "https://a/token"  # type: ignore[union-attr]
    assert parse_challenge("Bearer").realm is None  # type: ignore[union-attr]


def test_empty_list_elements_are_ignored() -> None:
    # RFC 9110 section 5.6.1: a recipient MUST accept and ignore empty list elements.
    challenge = parse_challenge('Bearer realm="https://a/token", , service="a"')
    assert challenge == Challenge("bearer", {"realm": "https://a/token", "service": "a"})


@pytest.mark.parametrize("header", ["", " ", "\t", "\r\n"])
def test_blank_header_is_none(header: str) -> None:
    assert parse_challenge(header) is None


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="unterminated',
        "Bearer ===",
        'Bearer "quoted"',
        "Bearer realm",
        "Bearer realm=a service=b",
        'Bearer realm="\\',
        "Bearer ,,,,",
        "\x00\x01 \x02=\x03",
        "Bearer " + "a=" * 5000,
        'Bearer realm="' + "\\" * 10001 + '"',
    ],
)
def test_garbage_does_not_raise(header: str) -> None:
    challenge = parse_challenge(header)
    assert challenge is not None
    assert challenge.scheme == header.strip().split(" ")[0].lower()


@given(st.text())
def test_any_text_parses_or_is_none(header: str) -> None:
    challenge = parse_challenge(header)
    if not header.strip():
        assert challenge is None
        return
    assert challenge is not None
    assert challenge.scheme
    assert challenge.scheme == challenge.scheme.lower()
    assert " " not in challenge.scheme
    for name, value in challenge.params.items():
        assert name == name.lower()
        assert isinstance(value, str)


@given(
    st.sampled_from(["Bearer", "Basic", "bearer", "BASIC"]),
    st.dictionaries(param_names, param_values, max_size=6),
    st.sampled_from([",", ", ", " ,", " , "]),
)
def test_quoted_params_round_trip(scheme: str, params: dict[str, str], comma: str) -> None:
    header = f"{scheme} " + comma.join(f"{name}={quote(value)}" for name, value in params.items())
    assert parse_challenge(header) == Challenge(scheme.lower(), params)
