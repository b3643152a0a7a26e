from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient

from authsvc import migrate
from authsvc.models import metadata
from authsvc.runtime import Runtime


def test_discovery_document(client: TestClient) -> None:
    doc = client.get("/.well-known/openid-configuration").json()
    assert doc["issuer"] == "http://testserver" and doc["jwks_uri"] == "http://testserver/jwks.json"
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert "urn:sscard:acr:substantial" in doc["acr_values_supported"]


def test_jwks_is_cacheable_and_public_only(client: TestClient) -> None:
    answer = client.get("/jwks.json")
    assert answer.headers["content-type"] == "application/jwk-set+json"
    assert "max-age" in answer.headers["cache-control"]
    assert all(set(k) == {"kty", "crv", "x", "y", "kid", "use", "alg"} for k in answer.json()["keys"])


def test_health(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "store": True, "database": True}


def test_migrations_match_the_models(runtime: Runtime) -> None:
    assert not migrate.pending(runtime.engine)
    with runtime.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
