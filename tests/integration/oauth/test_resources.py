"""Introspection, revocation, userinfo (claims by scope, SSN release rules, pairwise), the admin API and
`authsvc client ...`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from authsvc.clients.models import AuthMethod
from authsvc.database import unit_of_work
from authsvc.registry import service as registry
from authsvc.runtime import Runtime
from tests.fixtures.oidc import RegisteredClient, dpop_proof, new_dpop_key, register_client
from tests.integration.oauth.flows import CARD, CARD_PIN, ISSUER, authed, code_grant, post, refresh, secret_client

SSN, NAME = "110105199003072813", "张伟"


def holder_subject(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as session:
        return registry.add_cardholder(session, ssn=SSN, name=NAME).subject


def resource_server(runtime: Runtime):  # type: ignore[no-untyped-def]
    return secret_client(runtime, grant_types=["client_credentials"], scopes=[], redirect_uris=[], may_introspect=True)


def introspect(client: TestClient, rs, token: str) -> dict:  # type: ignore[no-untyped-def]
    answer = authed(client, "/introspect", rs, {"token": token})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    return answer.json()


def test_introspection(client: TestClient, runtime: Runtime) -> None:
    rs, portal = resource_server(runtime), register_client(runtime)
    tokens = code_grant(client, runtime, portal).json()
    access = introspect(client, rs, tokens["access_token"])
    assert access["active"] and access["client_id"] == portal.client_id and access["token_type"] == "Bearer"
    assert access["scope"] == "openid profile" and access["acr"] == CARD_PIN
    refresh_info = introspect(client, rs, tokens["refresh_token"])
    assert refresh_info["active"] and refresh_info["token_type"] == "refresh_token"
    for junk in ("junk", tokens["access_token"][:-4] + "AAAA", "0" * 32 + "." + "a" * 43, tokens["id_token"]):
        assert introspect(client, rs, junk) == {"active": False}
    refresh(client, portal, tokens["refresh_token"])
    assert introspect(client, rs, tokens["refresh_token"]) == {"active": False}  # spent
    not_rs = authed(client, "/introspect", portal, {"token": tokens["access_token"]})
    assert not_rs.status_code == 403 and not_rs.json()["error"] == "unauthorized_client"


def test_a_public_client_revokes_its_own_tokens_by_naming_itself(client: TestClient, runtime: Runtime) -> None:
    def native(name: str) -> RegisteredClient:
        return register_client(
            runtime, name=name, auth_method=AuthMethod.NONE, redirect_uris=["http://127.0.0.1/callback"]
        )

    rs, app, other = resource_server(runtime), native("app"), native("other app")
    tokens = code_grant(client, runtime, app).json()
    assert "refresh_token" in tokens
    # Another public client naming itself changes nothing; naming nobody is invalid_client; a confidential client
    # cannot drop its secret by naming itself.
    assert authed(client, "/revoke", other, {"token": tokens["refresh_token"]}).status_code == 200
    assert introspect(client, rs, tokens["refresh_token"])["active"]
    anonymous = post(client, "/revoke", {"token": tokens["refresh_token"]})
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"
    portal = register_client(runtime)
    posing = post(client, "/revoke", {"token": "x", "client_id": portal.client_id})
    assert posing.status_code == 401 and posing.json()["error"] == "invalid_client"
    assert authed(client, "/revoke", app, {"token": tokens["refresh_token"]}).status_code == 200
    assert introspect(client, rs, tokens["refresh_token"]) == {"active": False}
    assert introspect(client, rs, tokens["access_token"]) == {"active": False}  # the grant went with it


def test_revocation(client: TestClient, runtime: Runtime) -> None:
    rs, portal, other = resource_server(runtime), register_client(runtime), register_client(runtime)
    tokens = code_grant(client, runtime, portal).json()
    # Another client's revocation request changes nothing, and says nothing.
    assert authed(client, "/revoke", other, {"token": tokens["access_token"]}).status_code == 200
    assert authed(client, "/revoke", other, {"token": tokens["refresh_token"]}).status_code == 200
    assert introspect(client, rs, tokens["access_token"])["active"]
    assert authed(client, "/revoke", portal, {"token": tokens["access_token"]}).status_code == 200
    assert introspect(client, rs, tokens["access_token"]) == {"active": False}
    assert introspect(client, rs, tokens["refresh_token"])["active"]  # an access token revokes only itself
    assert authed(client, "/revoke", portal, {"token": tokens["refresh_token"]}).status_code == 200
    assert introspect(client, rs, tokens["refresh_token"]) == {"active": False}
    assert refresh(client, portal, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert authed(client, "/revoke", portal, {"token": "whatever"}).status_code == 200


def test_revoke_session_reaches_the_grants(client: TestClient, runtime: Runtime) -> None:
    from authsvc.oauth import grants

    rs, portal = resource_server(runtime), register_client(runtime)
    a = code_grant(client, runtime, portal, sid="s-42").json()
    b = code_grant(client, runtime, portal, sid="s-42").json()
    c = code_grant(client, runtime, portal, sid="s-other").json()
    with unit_of_work(runtime.sessions) as session:
        assert grants.revoke_session(session, runtime, "s-42") == 2
    assert not introspect(client, rs, a["access_token"])["active"]
    assert not introspect(client, rs, b["refresh_token"])["active"]
    assert introspect(client, rs, c["access_token"])["active"]


def userinfo(client: TestClient, token: str, **headers: str):  # type: ignore[no-untyped-def]
    return client.get("/userinfo", headers={"Authorization": f"Bearer {token}", **headers})


def test_userinfo_by_scope(client: TestClient, runtime: Runtime) -> None:
    subject = holder_subject(runtime)
    portal = register_client(runtime)
    only_openid = code_grant(client, runtime, portal, subject=subject, scope=["openid"]).json()["access_token"]
    assert userinfo(client, only_openid).json() == {"sub": subject}
    profile = code_grant(client, runtime, portal, subject=subject).json()["access_token"]
    answer = client.post("/userinfo", headers={"Authorization": f"Bearer {profile}"})
    assert answer.json() == {"sub": subject, "name": NAME, "gender": "male", "birthdate": "1990-03-07"}
    assert userinfo(client, "").status_code == 401
    missing = client.get("/userinfo")
    assert missing.status_code == 401 and "Bearer" in missing.headers["www-authenticate"]


def test_userinfo_pairwise(client: TestClient, runtime: Runtime) -> None:
    subject = holder_subject(runtime)
    portal = register_client(runtime, subject_type="pairwise")
    body = code_grant(client, runtime, portal, subject=subject).json()
    claims = userinfo(client, body["access_token"]).json()
    assert claims["sub"] != subject and claims["name"] == NAME


@pytest.mark.parametrize(
    ("registered", "min_acr", "acr", "released"),
    [
        (True, CARD_PIN, CARD_PIN, True),
        (True, CARD_PIN, CARD, False),  # the login did not reach the client's level
        (False, None, CARD_PIN, False),  # the client is not registered for it
    ],
)
def test_ssn_release_rules(
    client: TestClient, runtime: Runtime, registered: bool, min_acr: str | None, acr: str, released: bool
) -> None:
    subject = holder_subject(runtime)
    scopes = ["openid", "profile", "ssn"] if registered else ["openid", "profile"]
    portal = register_client(runtime, scopes=scopes, ssn_min_acr=min_acr, acr_values=[CARD, CARD_PIN])
    asked = ["openid", "ssn"] if registered else ["openid"]
    token = code_grant(client, runtime, portal, subject=subject, scope=asked, acr=acr).json()["access_token"]
    assert ("social_security_number" in userinfo(client, token).json()) is released
    if released:
        assert userinfo(client, token).json()["social_security_number"] == SSN


def test_userinfo_with_dpop_bound_token(client: TestClient, runtime: Runtime) -> None:
    subject = holder_subject(runtime)
    portal = register_client(runtime, require_dpop=True)
    key = new_dpop_key()
    token = code_grant(client, runtime, portal, subject=subject, dpop_key=key).json()["access_token"]
    as_bearer = userinfo(client, token)
    assert as_bearer.status_code == 401 and as_bearer.headers["www-authenticate"].startswith("DPoP ")
    proof = dpop_proof(key, htm="GET", htu=ISSUER + "/userinfo", access_token=token)
    ok = client.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert ok.status_code == 200 and ok.json()["sub"] == subject
    replay = client.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert replay.status_code == 401 and 'error="invalid_dpop_proof"' in replay.headers["www-authenticate"]
    no_ath = dpop_proof(key, htm="GET", htu=ISSUER + "/userinfo")
    assert client.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": no_ath}).status_code == 401
    other_key = dpop_proof(new_dpop_key(), htm="GET", htu=ISSUER + "/userinfo", access_token=token)
    assert client.get("/userinfo", headers={"Authorization": f"DPoP {token}", "DPoP": other_key}).status_code == 401


def test_step_up_challenge(client: TestClient, runtime: Runtime) -> None:
    from authsvc.oauth import resource, step_up

    portal = register_client(runtime, acr_values=[CARD, CARD_PIN])
    token = code_grant(client, runtime, portal, acr=CARD).json()["access_token"]
    checked = resource.authenticate(runtime, method="GET", url=ISSUER + "/x", authorization=f"Bearer {token}", dpop=[])
    step_up.require(checked, acr=CARD)
    with pytest.raises(step_up.InsufficientUserAuthentication) as caught:
        step_up.require(checked, acr=CARD_PIN, max_age=300)
    www = caught.value.headers["WWW-Authenticate"]
    assert caught.value.status == 401 and 'error="insufficient_user_authentication"' in www
    assert f'acr_values="{CARD_PIN}"' in www and 'max_age="300"' in www
    with pytest.raises(step_up.InsufficientUserAuthentication):
        step_up.require(checked, max_age=10, now=checked.auth_time + 60)  # type: ignore[operator]


def admin_token(client: TestClient, runtime: Runtime) -> str:
    admin = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    return authed(client, "/token", admin, {"grant_type": "client_credentials"}).json()["access_token"]


def test_admin_api(client: TestClient, runtime: Runtime) -> None:
    auth = {"Authorization": f"Bearer {admin_token(client, runtime)}"}
    doc = {
        "client_name": "医保门户",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": ["https://portal.example/cb"],
        "scope": "openid profile",
    }
    made = client.post("/admin/clients", json=doc, headers=auth)
    assert made.status_code == 201, made.text
    registration = made.json()
    client_id, secret = registration["client_id"], registration["client_secret"]
    assert client.get(f"/admin/clients/{client_id}", headers=auth).json()["client_name"] == "医保门户"
    assert "client_secret" not in client.get(f"/admin/clients/{client_id}", headers=auth).json()
    assert any(c["client_id"] == client_id for c in client.get("/admin/clients", headers=auth).json())
    rotated = client.post(f"/admin/clients/{client_id}/secret", headers=auth).json()["client_secret"]
    assert rotated != secret
    assert client.post(f"/admin/clients/{client_id}/disable", headers=auth).json()["status"] == "disabled"
    bad = client.post("/admin/clients", json={**doc, "redirect_uris": ["http://evil.example/cb"]}, headers=auth)
    assert bad.status_code == 400 and bad.json()["reason"] == "invalid_client_metadata"
    assert bad.headers["content-type"] == "application/problem+json"
    unknown = client.post("/admin/clients", json={**doc, "colour": "red"}, headers=auth)
    assert unknown.status_code == 400
    assert client.get("/admin/clients/nobody", headers=auth).status_code == 404
    assert client.post("/admin/clients", content=b"{", headers=auth).status_code == 400


@pytest.mark.parametrize(
    "doc",
    [
        {"client_name": None},
        {"client_name": "x", "grant_types": ["client_credentials"], "jwks": {"keys": [{"kty": "EC", "crv": "P-256"}]}},
        {"client_name": "x", "grant_types": ["client_credentials"], "jwks": {"keys": [{"kty": "EC", "x": 1, "y": 2}]}},
        {"client_name": "x", "grant_types": ["client_credentials"], "jwks": {"keys": [{"kty": "RSA", "n": "AQAB"}]}},
        {"client_name": "x", "redirect_uris": ["https://[::1/cb"]},
        {"client_name": "x", "redirect_uris": ["https://portal.example:99999/cb"]},
        {"client_name": "x", "grant_types": ["client_credentials"], "jwks_uri": "https://keys.example:x/jwks"},
    ],
)
def test_admin_api_bad_metadata_is_a_400(client: TestClient, runtime: Runtime, doc: dict) -> None:
    # Null where a string belongs, keys the JOSE library chokes on (InvalidKeyError, TypeError), URLs urllib refuses
    # (ValueError): never a 500.
    auth = {"Authorization": f"Bearer {admin_token(client, runtime)}"}
    answer = client.post("/admin/clients", json=doc, headers=auth)
    assert answer.status_code == 400 and answer.json()["reason"] == "invalid_client_metadata", answer.text


def test_admin_api_needs_the_admin_scope(client: TestClient, runtime: Runtime) -> None:
    assert client.get("/admin/clients").status_code == 401
    portal = register_client(runtime)
    user_token = code_grant(client, runtime, portal).json()["access_token"]
    answer = client.get("/admin/clients", headers={"Authorization": f"Bearer {user_token}"})
    assert answer.status_code == 403 and 'error="insufficient_scope"' in answer.headers["www-authenticate"]


def test_cli_client_add_show_disable(cli_env: Runtime, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from authsvc.cli import main
    from tests.fixtures.oidc import public_jwk

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({**public_jwk(new_dpop_key()), "kid": "k1"}))
    argv = ["client", "add", "--name", "社保门户", "--redirect-uri", "https://portal.example/cb", "--jwks", str(jwks)]
    code = main([*argv, "--fapi", "--pairwise", "--scope", "openid profile ssn", "--ssn-min-acr", CARD_PIN])
    out = capsys.readouterr().out
    assert code == 0
    registration = json.loads(out)
    assert (
        registration["fapi"] and registration["dpop_bound_access_tokens"] and registration["subject_type"] == "pairwise"
    )
    assert (
        main(
            [
                "client",
                "add",
                "--name",
                "bank",
                "--auth-method",
                "client_secret_basic",
                "--grant",
                "client_credentials",
                "--scope",
                "sscard:admin",
            ]
        )
        == 0
    )
    backend = json.loads(capsys.readouterr().out)  # one JSON document, the secret in it (RFC 7591 style)
    assert len(backend["client_secret"]) >= 43 and backend["token_endpoint_auth_method"] == "client_secret_basic"
    assert main(["client", "rotate-secret", backend["client_id"]]) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["client_id"] == backend["client_id"] and rotated["client_secret"] != backend["client_secret"]
    assert main(["client", "show", registration["client_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["client_id"] == registration["client_id"]
    assert main(["client", "disable", registration["client_id"]]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "client",
                "add",
                "--name",
                "x",
                "--redirect-uri",
                "http://evil.example/cb",
                "--auth-method",
                "client_secret_basic",
            ]
        )
        == 1
    )
    assert "https" in capsys.readouterr().err
    assert main(["client", "rotate-secret", registration["client_id"]]) == 1  # private_key_jwt has no secret
