"""Client authentication (client_secret_basic, private_key_jwt) and pushed authorization requests."""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from authsvc.clients import service as clients
from authsvc.database import unit_of_work
from authsvc.oauth import client_auth, par
from authsvc.runtime import Runtime
from tests.fixtures.oidc import assertion_form, basic_auth, client_assertion, dpop_proof, jkt_of, new_dpop_key
from tests.fixtures.oidc import register_client as register
from tests.integration.oauth.flows import ISSUER, authed, post, secret_client

CC = {"grant_type": "client_credentials"}
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def machine(runtime: Runtime, **spec):  # type: ignore[no-untyped-def]
    return register(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[], **spec)


def test_secret_basic(client: TestClient, runtime: Runtime) -> None:
    rc = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    assert authed(client, "/token", rc, CC).status_code == 200
    wrong = post(client, "/token", CC, {"Authorization": basic_auth(rc.client_id, "nope")})
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic realm=")
    for header in ("Basic !!!", "Basic " + "YWJj", "Bearer x"):
        answer = post(client, "/token", CC, {"Authorization": header})
        assert answer.status_code == 401 and "www-authenticate" in answer.headers
    posted = post(client, "/token", {**CC, "client_id": rc.client_id, "client_secret": rc.secret or ""})
    assert posted.status_code == 401 and "client_secret_post" in posted.json()["error_description"]
    assert post(client, "/token", CC).status_code == 401


def test_disabled_client_fails(client: TestClient, runtime: Runtime) -> None:
    rc = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    with unit_of_work(runtime.sessions) as session:
        clients.set_status(session, rc.client_id, "disabled", actor="test")
    answer = authed(client, "/token", rc, CC)
    assert answer.status_code == 401 and "disabled" in answer.json()["error_description"]


def test_private_key_jwt(client: TestClient, runtime: Runtime) -> None:
    rc = machine(runtime)
    url = ISSUER + "/token"
    assert post(client, "/token", {**CC, **assertion_form(rc, url)}).status_code == 200
    assert post(client, "/token", {**CC, **assertion_form(rc, ISSUER)}).status_code == 200  # aud = issuer


def test_private_key_jwt_refusals(client: TestClient, runtime: Runtime) -> None:
    rc = machine(runtime)
    url = ISSUER + "/token"

    def refused(form: dict[str, str]) -> str:
        answer = post(client, "/token", {**CC, **form})
        assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", answer.text
        assert "www-authenticate" not in answer.headers  # not an Authorization-header attempt
        return answer.json()["error_description"]

    forged = assertion_form(rc, url, key=ec.generate_private_key(ec.SECP256R1()))
    assert "not signed by a key" in refused(forged)
    replayed = assertion_form(rc, url)
    assert post(client, "/token", {**CC, **replayed}).status_code == 200
    assert "already used" in refused(replayed)
    assert "aud" in refused(assertion_form(rc, "https://other.example/token"))
    assert "aud" in refused(assertion_form(rc, ISSUER + "/introspect"))
    assert "expired" in refused(assertion_form(rc, url, now=time.time() - 600))
    assert "exp is more than" in refused(assertion_form(rc, url, lifetime=7200))
    assert "future" in refused(assertion_form(rc, url, iat=int(time.time()) + 600))
    assert "required" in refused(assertion_form(rc, url, jti=None))
    assert "sub" in refused(assertion_form(rc, url, sub="someone-else"))
    hs = client_assertion(rc, url, key="0" * 32, alg="HS256")
    assert "signed with" in refused(
        {"client_assertion_type": assertion_form(rc, url)["client_assertion_type"], "client_assertion": hs}
    )
    assert "client_assertion_type" in refused({"client_assertion": client_assertion(rc, url)})
    assert "failed" in refused({**assertion_form(rc, url), "client_id": "another"})


def test_basic_credentials_that_do_not_percent_decode(client: TestClient, runtime: Runtime) -> None:
    # RFC 6749 §2.3.1 form-encodes id and secret; "%ff" is not UTF-8. A 401, at every endpoint, never a 500.
    for raw in (b"%ff:x", b"x:%ff"):
        header = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        for path, form in (("/token", CC), ("/introspect", {"token": "x"}), ("/revoke", {"token": "x"})):
            answer = post(client, path, form, header)
            assert answer.status_code == 401 and answer.json()["error"] == "invalid_client", (path, answer.text)
            assert answer.headers["www-authenticate"].startswith("Basic realm=")


def test_assertion_exp_must_be_a_number(client: TestClient, runtime: Runtime) -> None:
    rc = machine(runtime)
    form = assertion_form(rc, ISSUER + "/token", exp=str(int(time.time()) + 60))  # pyjwt itself accepts it
    answer = post(client, "/token", {**CC, **form})
    assert answer.status_code == 401 and "exp" in answer.json()["error_description"], answer.text


def rsa_jwk(bits: int) -> tuple[rsa.RSAPrivateKey, dict[str, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key, {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "r1", "alg": "PS256"}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the weak key is the point
def test_rsa_client_keys_have_at_least_2048_bits(client: TestClient, runtime: Runtime) -> None:
    weak, weak_jwk = rsa_jwk(1024)
    with pytest.raises(clients.ClientError, match="2048"):
        machine(runtime, jwks={"keys": [weak_jwk]})
    strong, strong_jwk = rsa_jwk(2048)
    rc = machine(runtime, jwks={"keys": [strong_jwk]})
    url = ISSUER + "/token"
    ok = client_assertion(rc, url, key=strong, kid="r1", alg="PS256")
    assert post(client, "/token", {**CC, **assertion_form(rc, url), "client_assertion": ok}).status_code == 200
    # A key that reached the registry another way (a jwks_uri, a row from before the rule) is not used either.
    with unit_of_work(runtime.sessions) as session:
        row = clients.get(session, rc.client_id)
        assert row is not None
        row.jwks = {"keys": [weak_jwk]}
    client_auth.clients(runtime).forget(rc.client_id)
    forged = client_assertion(rc, url, key=weak, kid="r1", alg="PS256")
    answer = post(client, "/token", {**CC, **assertion_form(rc, url), "client_assertion": forged})
    assert answer.status_code == 401 and "not signed by a key" in answer.json()["error_description"]


def test_one_method_per_request(client: TestClient, runtime: Runtime) -> None:
    rc = machine(runtime)
    both = post(client, "/token", {**CC, **assertion_form(rc, ISSUER + "/token")}, {"Authorization": "Basic eDp5"})
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"


def test_a_client_uses_its_registered_method_only(client: TestClient, runtime: Runtime) -> None:
    rc = secret_client(runtime, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])
    fake = machine(runtime)
    fake.client_id = rc.client_id  # an assertion claiming the secret client's id
    answer = post(client, "/token", {**CC, **assertion_form(fake, ISSUER + "/token")})
    assert answer.status_code == 401


def push(client: TestClient, rc, **params: str):  # type: ignore[no-untyped-def]
    data = {
        "response_type": "code",
        "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": "openid profile",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        "state": "s1",
        **params,
    }
    data = {k: v for k, v in data.items() if v != ""}
    return authed(client, "/par", rc, data)


def test_par_single_use_and_per_client(client: TestClient, runtime: Runtime) -> None:
    rc, other = register(runtime), register(runtime)
    answer = push(client, rc)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["request_uri"].startswith("urn:ietf:params:oauth:request_uri:") and body["expires_in"] == 90
    assert par.take_request(runtime.store, body["request_uri"], other.client_id) is None
    params = par.take_request(runtime.store, body["request_uri"], rc.client_id)
    assert params is not None and params["state"] == "s1" and params["client_id"] == rc.client_id
    assert "client_assertion" not in params
    assert par.take_request(runtime.store, body["request_uri"], rc.client_id) is None


def test_par_expired_request_uri() -> None:
    from authsvc.store.memory import MemoryStore

    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    rc = type(
        "C",
        (),
        {
            "client_id": "c1",
            "grant_types": ["authorization_code"],
            "redirect_uris": ["https://p/cb"],
            "scopes": ["openid"],
            "acr_values": ["urn:sscard:acr:substantial"],
        },
    )()
    form = {
        "response_type": "code",
        "redirect_uri": "https://p/cb",
        "scope": "openid",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    uri = par.push(store, rc, form, ttl=90, dpop_jkt=None)  # type: ignore[arg-type]
    now[0] = 91
    assert par.take_request(store, uri, "c1") is None


def test_par_validation(client: TestClient, runtime: Runtime) -> None:
    rc = register(runtime)

    def error(**params: str) -> tuple[str, str]:
        answer = push(client, rc, **params)
        assert answer.status_code == 400, answer.text
        return answer.json()["error"], answer.json()["error_description"]

    assert error(redirect_uri="http://127.0.0.1:9/other")[0] == "invalid_request"
    assert error(response_type="token")[0] == "unsupported_response_type"
    assert error(code_challenge_method="plain")[0] == "invalid_request"
    assert error(code_challenge="")[0] == "invalid_request"
    assert error(scope="openid ssn")[0] == "invalid_scope"
    assert error(acr_values="urn:sscard:acr:high")[0] == "invalid_request"
    assert error(request_uri="urn:ietf:params:oauth:request_uri:x")[0] == "invalid_request"
    assert error(request="eyJ.x.y")[0] == "request_not_supported"
    unauthenticated = post(client, "/par", {"response_type": "code", "client_id": rc.client_id})
    assert unauthenticated.status_code == 401


def test_par_with_dpop_binds_the_code_key(client: TestClient, runtime: Runtime) -> None:
    rc = register(runtime, fapi=True)
    key = new_dpop_key()
    data = {
        "response_type": "code",
        "redirect_uri": "http://127.0.0.1:9/cb",
        "scope": "openid",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    answer = authed(client, "/par", rc, data, {"DPoP": dpop_proof(key, htu=ISSUER + "/par")})
    assert answer.status_code == 201, answer.text
    params = par.take_request(runtime.store, answer.json()["request_uri"], rc.client_id)
    assert params is not None and params["dpop_jkt"] == jkt_of(key)


def test_a_fapi_client_names_the_issuer_as_the_only_audience(client: TestClient, runtime: Runtime) -> None:
    """FAPI 2.0 §5.3.2.1: an assertion made out to an endpoint (or with several audiences) could have been made
    for another server's endpoint of the same URL; only the issuer as a single string is accepted."""
    rc = register(runtime, fapi=True, grant_types=["client_credentials"], scopes=["sscard:admin"], redirect_uris=[])

    def token(audience: str | list[str]):  # type: ignore[no-untyped-def]
        headers = {"DPoP": dpop_proof(new_dpop_key(), htu=ISSUER + "/token")}
        return post(client, "/token", {**CC, **assertion_form(rc, audience)}, headers)  # type: ignore[arg-type]

    for audience in (ISSUER + "/token", [ISSUER], [ISSUER, ISSUER + "/token"]):
        refused = token(audience)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", audience
    assert token(ISSUER).status_code == 200
