"""The token endpoint: authorization code (PKCE, redirect URI, single use, DPoP binding), refresh token rotation and
reuse detection, client credentials. Each refusal is checked for its RFC 6749 §5.2 form and for no state change."""

from __future__ import annotations

import time

import jwt
import pytest
from fastapi.testclient import TestClient

from authsvc.database import unit_of_work
from authsvc.oauth.models import OAuthGrant
from authsvc.runtime import Runtime
from tests.fixtures.oidc import PKCE_VERIFIER, dpop_proof, issue_code, jkt_of, new_dpop_key, register_client
from tests.integration.oauth.flows import ISSUER, authed, code_grant, refresh, secret_client


def claims(runtime: Runtime, token: str, audience: str) -> dict:
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.decode(token, runtime.keyring.public_key(kid), algorithms=["ES256"], audience=audience, issuer=ISSUER)


def error_of(answer) -> str:  # type: ignore[no-untyped-def]
    assert answer.headers["cache-control"] == "no-store" and answer.headers["pragma"] == "no-cache"
    return answer.json()["error"]


def test_code_grant_issues_id_access_and_refresh_tokens(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime)
    answer = code_grant(client, runtime, rc, nonce="abc", sid="sess-1")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "openid profile" and body["refresh_token"]
    assert answer.headers["cache-control"] == "no-store"
    id_token = claims(runtime, body["id_token"], rc.client_id)
    assert id_token["nonce"] == "abc" and id_token["sid"] == "sess-1" and id_token["sub"] == "subject-1"
    assert id_token["acr"] == "urn:sscard:acr:substantial" and "pin" in id_token["amr"] and "auth_time" in id_token
    from authsvc.tokens.issuing import at_hash

    assert id_token["at_hash"] == at_hash(body["access_token"])
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    access = claims(runtime, body["access_token"], "sscard-api")
    assert access["client_id"] == rc.client_id and access["scope"] == "openid profile" and access["grant_id"]


def test_pairwise_client_gets_its_own_subject(client: TestClient, runtime: Runtime) -> None:
    a = register_client(runtime, subject_type="pairwise", redirect_uris=["https://a.example/cb"])
    b = register_client(runtime, subject_type="pairwise", redirect_uris=["https://b.example/cb"])
    sub_a = claims(runtime, code_grant(client, runtime, a).json()["id_token"], a.client_id)["sub"]
    sub_b = claims(runtime, code_grant(client, runtime, b).json()["id_token"], b.client_id)["sub"]
    assert len({sub_a, sub_b, "subject-1"}) == 3


def test_wrong_pkce_verifier_spends_the_code(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime)
    code = issue_code(runtime, rc)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb"}
    answer = authed(client, "/token", rc, {**data, "code_verifier": "x" * 43})
    assert answer.status_code == 400 and error_of(answer) == "invalid_grant"
    assert "code_verifier" in answer.json()["error_description"]
    answer = authed(client, "/token", rc, {**data, "code_verifier": PKCE_VERIFIER})
    assert error_of(answer) == "invalid_grant"  # no second guess


def test_redirect_uri_mismatch(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime, redirect_uris=["http://127.0.0.1:9/cb", "http://127.0.0.1:9/other"])
    code = issue_code(runtime, rc)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": PKCE_VERIFIER}
    answer = authed(client, "/token", rc, {**data, "redirect_uri": "http://127.0.0.1:9/other"})
    assert error_of(answer) == "invalid_grant" and "redirect_uri" in answer.json()["error_description"]


def test_a_code_never_grants_the_admin_scope(client: TestClient, runtime: Runtime) -> None:
    # A client registered for both a sign-in and sscard:admin: /authorize admits any registered scope.
    rc = register_client(runtime, scopes=["openid", "sscard:admin"], grant_types=["authorization_code"])
    answer = code_grant(client, runtime, rc, scope=["openid", "sscard:admin"])
    assert answer.status_code == 400 and error_of(answer) == "invalid_scope", answer.text


def test_code_of_another_client(client: TestClient, runtime: Runtime) -> None:
    owner, thief = register_client(runtime), register_client(runtime)
    code = issue_code(runtime, owner)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": PKCE_VERIFIER}
    answer = authed(client, "/token", thief, {**data, "redirect_uri": "http://127.0.0.1:9/cb"})
    assert error_of(answer) == "invalid_grant"


def test_reused_code_revokes_the_grant_it_produced(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime)
    code = issue_code(runtime, rc)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:9/cb",
        "code_verifier": PKCE_VERIFIER,
    }
    first = authed(client, "/token", rc, data).json()
    again = authed(client, "/token", rc, data)
    assert again.status_code == 400 and error_of(again) == "invalid_grant"
    with unit_of_work(runtime.sessions) as session:
        grant = session.get(OAuthGrant, claims(runtime, first["access_token"], "sscard-api")["grant_id"])
        assert grant is not None and grant.revoked_reason == "code_reused"
    assert error_of(refresh(client, rc, first["refresh_token"])) == "invalid_grant"
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {first['access_token']}"})
    assert userinfo.status_code == 401 and 'error="invalid_token"' in userinfo.headers["www-authenticate"]


def test_dpop_bound_code_grant(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime, require_dpop=True)
    key = new_dpop_key()
    answer = code_grant(client, runtime, rc, dpop_key=key, dpop_jkt=jkt_of(key))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "DPoP" and answer.headers["dpop-nonce"]
    assert claims(runtime, body["access_token"], "sscard-api")["cnf"] == {"jkt": jkt_of(key)}


def test_dpop_refusals(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime, require_dpop=True)
    key = new_dpop_key()
    assert error_of(code_grant(client, runtime, rc)) == "invalid_dpop_proof"  # required, none sent
    # The code is bound to one key; a proof with another key does not redeem it.
    mismatch = code_grant(client, runtime, rc, dpop_key=new_dpop_key(), dpop_jkt=jkt_of(key))
    assert error_of(mismatch) == "invalid_grant" and "dpop_jkt" in mismatch.json()["error_description"]

    def attempt(proof: str):  # type: ignore[no-untyped-def]
        code = issue_code(runtime, rc)
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1:9/cb"}
        return authed(client, "/token", rc, {**data, "code_verifier": PKCE_VERIFIER}, {"DPoP": proof})

    proof = dpop_proof(key, htu=ISSUER + "/token")
    assert attempt(proof).status_code == 200
    replay = attempt(proof)
    assert error_of(replay) == "invalid_dpop_proof" and "already used" in replay.json()["error_description"]
    assert "htu" in attempt(dpop_proof(key, htu=ISSUER + "/par")).json()["error_description"]
    assert "htu" in attempt(dpop_proof(key, htu="http://evil.example/token")).json()["error_description"]
    assert "htm" in attempt(dpop_proof(key, htu=ISSUER + "/token", htm="GET")).json()["error_description"]
    stale = attempt(dpop_proof(key, htu=ISSUER + "/token", now=time.time() - 600))
    assert error_of(stale) == "invalid_dpop_proof" and "older" in stale.json()["error_description"]


@pytest.fixture
def nonce_client(settings_factory):  # type: ignore[no-untyped-def]
    from authsvc.app import create_app
    from authsvc.cli import prepare

    rt = Runtime(settings_factory(dpop_nonce_required=True))
    prepare(rt, migrate=False)
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as c:
        yield c, rt
    rt.close()


def test_missing_nonce_when_required_and_the_code_survives(nonce_client) -> None:  # type: ignore[no-untyped-def]
    client, runtime = nonce_client
    rc = register_client(runtime, require_dpop=True)
    key = new_dpop_key()
    code = issue_code(runtime, rc)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "http://127.0.0.1:9/cb",
        "code_verifier": PKCE_VERIFIER,
    }
    first = authed(client, "/token", rc, data, {"DPoP": dpop_proof(key, htu=ISSUER + "/token")})
    assert first.status_code == 400 and error_of(first) == "use_dpop_nonce"
    nonce = first.headers["dpop-nonce"]
    retry = authed(client, "/token", rc, data, {"DPoP": dpop_proof(key, htu=ISSUER + "/token", nonce=nonce)})
    assert retry.status_code == 200, retry.text


def test_refresh_rotation_and_reuse_revokes_the_grant(client: TestClient, runtime: Runtime) -> None:
    rc = register_client(runtime)
    first = code_grant(client, runtime, rc).json()
    second = refresh(client, rc, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"] and rotated["id_token"]
    third = refresh(client, rc, rotated["refresh_token"])
    assert third.status_code == 200
    reuse = refresh(client, rc, first["refresh_token"])
    assert error_of(reuse) == "invalid_grant" and "revoked" in reuse.json()["error_description"]
    # The whole grant is gone: the newest refresh token and the access tokens too.
    assert error_of(refresh(client, rc, third.json()["refresh_token"])) == "invalid_grant"
    answer = client.get("/userinfo", headers={"Authorization": f"Bearer {third.json()['access_token']}"})
    assert answer.status_code == 401


def test_refresh_scope_down_only_and_same_client(client: TestClient, runtime: Runtime) -> None:
    rc, other = register_client(runtime), register_client(runtime)
    first = code_grant(client, runtime, rc, scope=["openid"]).json()
    widened = refresh(client, rc, first["refresh_token"], scope="openid profile")
    assert error_of(widened) == "invalid_scope"
    assert error_of(refresh(client, other, first["refresh_token"])) == "invalid_grant"
    # Neither refusal spent the token.
    narrowed = refresh(client, rc, first["refresh_token"], scope="openid")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "openid"
    assert error_of(refresh(client, rc, "0" * 32 + "." + "a" * 43)) == "invalid_grant"


def test_client_credentials(client: TestClient, runtime: Runtime) -> None:
    rc = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    answer = authed(client, "/token", rc, {"grant_type": "client_credentials"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "refresh_token" not in body and "id_token" not in body and body["scope"] == "sscard:admin"
    access = claims(runtime, body["access_token"], "sscard-api")
    assert access["sub"] == rc.client_id and "grant_id" not in access
    assert error_of(authed(client, "/token", rc, {"grant_type": "client_credentials", "scope": "openid"})) == (
        "invalid_scope"
    )
    key = new_dpop_key()
    bound = authed(
        client, "/token", rc, {"grant_type": "client_credentials"}, {"DPoP": dpop_proof(key, htu=ISSUER + "/token")}
    )
    assert bound.json()["token_type"] == "DPoP"


def test_grant_types_are_per_client(client: TestClient, runtime: Runtime) -> None:
    portal = register_client(runtime)
    assert error_of(authed(client, "/token", portal, {"grant_type": "client_credentials"})) == "unauthorized_client"
    assert error_of(authed(client, "/token", portal, {"grant_type": "password"})) == "unsupported_grant_type"
    assert error_of(authed(client, "/token", portal, {})) == "invalid_request"


def test_malformed_bodies(client: TestClient, runtime: Runtime) -> None:
    rc = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    from tests.fixtures.oidc import basic_auth

    auth = {"Authorization": basic_auth(rc.client_id, rc.secret or "")}
    answer = client.post("/token", json={"grant_type": "client_credentials"}, headers=auth)
    assert answer.status_code == 400 and error_of(answer) == "invalid_request"
    answer = client.post(
        "/token",
        content=b"grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded", **auth},
    )
    assert error_of(answer) == "invalid_request" and "repeated" in answer.json()["error_description"]
    answer = client.post(
        "/token", content=b"x" * 20000, headers={"Content-Type": "application/x-www-form-urlencoded", **auth}
    )
    assert answer.status_code == 400 and error_of(answer) == "invalid_request"


def test_a_code_of_a_session_that_ended_is_refused(client: TestClient, runtime: Runtime) -> None:
    """A code issued just before logout must not become tokens that no logout token would ever reach."""
    from authsvc.sessions import repository
    from authsvc.sessions import service as sessions

    rc = register_client(runtime)
    value = issue_code(runtime, rc, sid="sess-ended")
    with unit_of_work(runtime.sessions) as db:
        session = repository.by_sid(db, "sess-ended")
        assert session is not None
        sessions.end(db, runtime, session, why="logout")
    data = {
        "grant_type": "authorization_code",
        "code": value,
        "redirect_uri": rc.registration["redirect_uris"][0],
        "code_verifier": PKCE_VERIFIER,
    }
    answer = authed(client, "/token", rc, data)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    with unit_of_work(runtime.sessions) as db:
        assert db.query(OAuthGrant).count() == 0
