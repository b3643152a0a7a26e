"""The e-card app's OAuth registration: a public native client (RFC 8252), held to what PKCE alone protects."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authsvc.clients import service as clients
from authsvc.clients.models import AuthMethod, GrantType, OAuthClient


def _spec(**overrides: object) -> clients.ClientSpec:
    values: dict[str, object] = {
        "name": "电子社保卡",
        "auth_method": AuthMethod.NONE,
        "redirect_uris": ["http://127.0.0.1/callback"],
        "scopes": ["openid", "ecard"],
    }
    values.update(overrides)
    return clients.ClientSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "uris", [["http://127.0.0.1/callback"], ["http://[::1]/callback"], ["https://app.example.gov.cn/cb"]]
)
def test_loopback_ip_without_a_port_or_https(uris: list[str]) -> None:
    assert clients.validate(_spec(redirect_uris=uris)).redirect_uris == uris


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"redirect_uris": ["http://127.0.0.1:8080/callback"]}, "without a port"),
        ({"redirect_uris": ["http://localhost/callback"]}, "RFC 8252"),
        ({"grant_types": [GrantType.CLIENT_CREDENTIALS]}, "authorization code grant only"),
        ({"may_introspect": True}, "introspection"),
        ({"fapi": True}, "private_key_jwt"),
        ({"jwks": {"keys": [{"kty": "EC"}]}}, "keys are only registered"),
    ],
)
def test_what_a_public_client_may_not_have(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(clients.ClientError, match=message):
        clients.validate(_spec(**overrides))


def _client(auth_method: str, uris: list[str]) -> OAuthClient:
    return OAuthClient(client_id="c", name="n", auth_method=auth_method, redirect_uris=uris)


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("http://127.0.0.1/callback", True),
        ("http://127.0.0.1:1/callback", True),
        ("http://127.0.0.1:65535/callback", True),
        ("http://[::1]:4000/callback", False),  # registered for 127.0.0.1 only
        ("http://127.0.0.1:4000/callback?x=1", False),
        ("http://127.0.0.1:4000/Callback", False),
        ("http://127.0.0.1:0x10/callback", False),
        ("http://127.0.0.1:99999/callback", False),
        ("http://user@127.0.0.1:4000/callback", False),
        ("https://127.0.0.1:4000/callback", False),
        ("http://127.0.0.2:4000/callback", False),
        # urlsplit drops tabs and line breaks before comparing, but the browser is sent to the URI as given.
        ("http://127.0.0.1:4000/callback\n", False),
        ("http://127.0.0.1:4000/call\tback", False),
        ("http://127.0.0.1:4000/call\rback", False),
        ("http://127.0.0.1:4000/callback ", False),
    ],
)
def test_any_port_matches_only_for_the_public_clients_loopback_uri(uri: str, ok: bool) -> None:
    assert clients.redirect_uri_registered(_client(AuthMethod.NONE, ["http://127.0.0.1/callback"]), uri) is ok
    if uri != "http://127.0.0.1/callback":
        # A confidential client's redirect URIs stay exact, loopback or not.
        confidential = _client(AuthMethod.CLIENT_SECRET_BASIC, ["http://127.0.0.1/callback"])
        assert not clients.redirect_uri_registered(confidential, uri)


_HOSTS = ["http://127.0.0.1", "HTTP://127.0.0.1", "http://[::1]", "http://user@127.0.0.1", "http://:x@127.0.0.1",
          "http://127.0.0.1.", "https://127.0.0.1", "http://localhost"]  # fmt: skip
_PORTS = ["", ":4000", ":0", ":99999", ":０", ":4000@evil.example", ":4000\\@evil.example", ":+1", ":"]
_NOISE = ["", "\t", "\n", "\r", " ", "?", "?x", "#", "%0a", "/..", "\\", "@"]


def _near(host: str, port: str, noise: str, at: int) -> str:
    """The registered URI with a port, and one odd piece somewhere in its path."""
    return host + port + "/callback"[:at] + noise + "/callback"[at:]


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            _near,
            st.sampled_from(_HOSTS),
            st.sampled_from(_PORTS),
            st.sampled_from(_NOISE),
            st.integers(min_value=0, max_value=len("/callback")),
        ),
    )
)
def test_any_port_matching_takes_only_the_registered_uri_with_a_port(uri: str) -> None:
    # Whatever the string, a bool comes out; True only for the registered URI with some port, nothing that a browser
    # would read as another host, path or query.
    client = _client(AuthMethod.NONE, ["http://127.0.0.1/callback"])
    if clients.redirect_uri_registered(client, uri):
        assert uri.isascii() and uri.isprintable() and "@" not in uri and "\\" not in uri
        parts = urlsplit(uri)
        assert (parts.hostname, parts.path, parts.query, parts.fragment) == ("127.0.0.1", "/callback", "", "")
