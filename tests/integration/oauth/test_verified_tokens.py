"""The per-worker cache of verified access tokens (authsvc.oauth.resource.VerifiedTokens): a hit skips the signature
check, never the revocation and client checks; entries end with the token and with its signing key; bounded."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from authsvc.cli import prepare
from authsvc.clients import service as clients_service
from authsvc.clients.models import AuthMethod, ClientStatus
from authsvc.database import unit_of_work
from authsvc.oauth import client_auth, grants, introspection, resource
from authsvc.runtime import Runtime
from authsvc.tokens import issuing
from tests.fixtures.oidc import basic_auth, register_client


def _access(runtime: Runtime, client_id: str, *, grant_id: str | None = None, ttl: int = 600) -> str:
    s = runtime.settings
    token, _ = issuing.access_token(
        runtime.keyring,
        issuer=s.issuer,
        audience=s.access_token_audience,
        client_id=client_id,
        subject="subject-1",
        scope="openid",
        ttl=ttl,
        grant_id=grant_id,
    )
    return token


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every full verification (pyjwt decode of an access token) made from here on."""
    seen: list[str] = []
    real = jwt.decode

    def counting(value: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(value)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(resource.jwt, "decode", counting)
    return seen


def test_a_cached_token_is_not_verified_again(runtime: Runtime, verifications: list[str]) -> None:
    rc = register_client(runtime)
    token = _access(runtime, rc.client_id)
    first = resource.decode(runtime, token)
    second = resource.decode(runtime, token)
    assert first.claims == second.claims and verifications == [token]
    # A token differing in one signature character is another key in the cache, and fails verification.
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    with pytest.raises(resource.TokenInvalid):
        resource.decode(runtime, tampered)
    assert verifications == [token, tampered]


def test_revocation_and_a_disabled_client_reach_cached_tokens(runtime: Runtime, verifications: list[str]) -> None:
    rc = register_client(runtime)
    plain, other = _access(runtime, rc.client_id), _access(runtime, rc.client_id)
    granted = _access(runtime, rc.client_id, grant_id="f" * 32)
    for token in (plain, other, granted):
        resource.decode(runtime, token)
    resource.deny(runtime, resource.decode(runtime, plain))
    with pytest.raises(resource.TokenInvalid, match="revoked"):
        resource.decode(runtime, plain)
    runtime.store.put(grants.revoked_key("f" * 32), b"1", 60)
    with pytest.raises(resource.TokenInvalid, match="grant was revoked"):
        resource.decode(runtime, granted)
    assert resource.decode(runtime, other).jti  # the others stand
    with unit_of_work(runtime.sessions) as session:
        clients_service.set_status(session, rc.client_id, ClientStatus.DISABLED, actor="test")
    client_auth.clients(runtime).forget(rc.client_id)
    with pytest.raises(resource.TokenInvalid, match="disabled"):
        resource.decode(runtime, other)
    assert len(verifications) == 3  # all of it without verifying a signature again


def test_entries_end_with_the_token_and_with_its_key(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    rc = register_client(runtime)
    token = _access(runtime, rc.client_id, ttl=60)
    cache = resource.verified_tokens(runtime)
    claims = resource.decode(runtime, token).claims
    now = time.time()
    assert cache.get(runtime, token, now) == claims
    assert cache.get(runtime, token, float(claims["exp"])) is None  # at exp, as pyjwt would refuse it
    assert cache.get(runtime, token, now) is None  # and it is gone
    resource.decode(runtime, token)
    monkeypatch.setattr(runtime.keyring, "public_key", lambda kid: None)  # the signing key is withdrawn
    assert cache.get(runtime, token, now) is None
    with pytest.raises(resource.TokenInvalid, match="not signed by a key of this issuer"):
        resource.decode(runtime, token)


def test_the_cache_is_bounded(runtime: Runtime) -> None:
    cache = resource.VerifiedTokens(size=3)
    far = time.time() + 600
    kid = next(iter(runtime.keyring.jwks()["keys"]))["kid"]
    for n in range(5):
        cache.put(f"token-{n}", {"exp": far, "n": n}, kid)
    assert len(cache) == 3
    assert cache.get(runtime, "token-0", time.time()) is None and cache.get(runtime, "token-1", time.time()) is None
    assert [cache.get(runtime, f"token-{n}", time.time()) for n in (2, 3, 4)] == [
        {"exp": far, "n": n} for n in (2, 3, 4)
    ]


def test_introspection_runs_inline_only_when_nothing_blocks(settings_factory) -> None:  # type: ignore[no-untyped-def]
    runtime = Runtime(settings_factory(key_cache_seconds=30))  # caches on, as in production
    prepare(runtime, migrate=False)
    try:
        rs = register_client(
            runtime,
            auth_method=AuthMethod.CLIENT_SECRET_BASIC,
            grant_types=["client_credentials"],
            scopes=[],
            redirect_uris=[],
            may_introspect=True,
        )
        portal = register_client(runtime)
        authorization = basic_auth(rs.client_id, rs.secret or "")
        token = _access(runtime, portal.client_id)
        form = {"token": token}
        assert not introspection.runs_inline(runtime, form, authorization=authorization)  # nothing cached yet
        client_auth.authenticate(runtime, authorization=authorization, form=form, endpoint="x")
        assert not introspection.runs_inline(runtime, form, authorization=authorization)  # the token's client
        assert introspection.introspect(runtime, token)["active"]
        assert introspection.runs_inline(runtime, form, authorization=authorization)
        assert not introspection.runs_inline(runtime, {"token": "0" * 32 + "." + "a" * 43}, authorization=authorization)
        assert introspection.runs_inline(runtime, {"token": "junk"}, authorization=authorization)  # refused inline
    finally:
        runtime.close()
