"""The orders API on both backends: create, read, list own only, auth refusals, tier refusals, Idempotency-Key
(replay byte for byte, other body refused, concurrent duplicate refused, scoped per caller, and the key on the order
row answering when the store lost the response)."""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from authsvc.app import create_app
from authsvc.cli import prepare
from authsvc.database import unit_of_work
from authsvc.runtime import Runtime
from payments.api import idempotency
from payments.api import orders as orders_api
from payments.orders.models import PaymentOrder
from tests.fixtures.oidc import register_client
from tests.integration.oauth.flows import authed, code_grant, secret_client
from tests.integration.payments.support import json_values

PATH = "/v1/payments/orders"
OTHER_SSN = "330106198511124520"
ORDER = {
    "payer_kind": "agent",
    "insured_ssn": OTHER_SSN,
    "insurance_type": "pension",
    "periods": ["2025"],
    "amount_fen": 30000,
    "region": "110000",
    "channel": "wechatpay",
}


def citizen_token(client: TestClient, runtime: Runtime, subject: str, scope: list[str] | None = None) -> str:
    portal = register_client(runtime, scopes=["openid", "payments"])
    answer = code_grant(client, runtime, portal, subject=subject, scope=scope or ["openid", "payments"])
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def backend_token(client: TestClient, runtime: Runtime) -> str:
    rc = secret_client(runtime, grant_types=["client_credentials"], scopes=["payments"], redirect_uris=[])
    return authed(client, "/token", rc, {"grant_type": "client_credentials"}).json()["access_token"]


def create(client: TestClient, token: str, body: Any = None, key: str | None = "k-1", raw: bytes | None = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    content = raw if raw is not None else json.dumps(ORDER if body is None else body).encode()
    return client.post(PATH, content=content, headers=headers)


def get(client: TestClient, token: str, path: str = PATH):  # type: ignore[no-untyped-def]
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def problem(answer: Any, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["reason"] == reason


def test_create_fetch_list_own_only(client: TestClient, runtime: Runtime) -> None:
    alice, bob = citizen_token(client, runtime, "alice"), citizen_token(client, runtime, "bob")
    created = create(client, alice)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["state"] == "created" and order["amount_fen"] == 30000 and order["payer_kind"] == "agent"
    assert OTHER_SSN not in created.text and order["insured_ssn_masked"] != OTHER_SSN
    fetched = get(client, alice, f"{PATH}/{order['id']}")
    assert fetched.status_code == 200 and fetched.json() == order
    assert get(client, alice).json() == {"orders": [order]}
    problem(get(client, bob, f"{PATH}/{order['id']}"), 404, "order_unknown")
    problem(get(client, alice, f"{PATH}/SOnosuchorder"), 404, "order_unknown")
    assert get(client, bob).json() == {"orders": []}
    backend = backend_token(client, runtime)
    problem(get(client, backend, f"{PATH}/{order['id']}"), 404, "order_unknown")
    employer = create(client, backend, {k: v for k, v in ORDER.items() if k != "payer_kind"})
    assert employer.status_code == 201 and employer.json()["payer_kind"] == "employer"
    assert get(client, backend).json() == {"orders": [employer.json()]}
    assert get(client, alice).json() == {"orders": [order]}


def test_auth_refusals(client: TestClient, runtime: Runtime) -> None:
    problem(client.get(PATH), 401, "token_required")
    problem(create(client, "not-a-token"), 401, "invalid_token")
    no_scope = citizen_token(client, runtime, "alice", scope=["openid"])
    problem(get(client, no_scope), 403, "insufficient_scope")
    problem(create(client, no_scope), 403, "insufficient_scope")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount_fen": 30001}, "order_invalid"),  # not a tier
        ({"periods": ["2030"]}, "order_invalid"),  # no tiers that year
        ({"periods": ["2025-03"]}, "order_invalid"),  # pension is yearly
        ({"amount_fen": "300.00"}, "order_invalid"),
        ({"amount_fen": 300.0}, "order_invalid"),
        ({"insured_ssn": "110105199003072810"}, "order_invalid"),  # check digit
        ({"payer_kind": "employer"}, "order_invalid"),  # a citizen is no employer
        ({"insurance_type": "health"}, "order_invalid"),
        ({"surprise": 1}, "order_invalid"),
        ({"periods": "2025"}, "order_invalid"),
    ],
)
def test_bad_orders_are_422_and_write_nothing(
    client: TestClient, runtime: Runtime, change: dict[str, Any], reason: str
) -> None:
    alice = citizen_token(client, runtime, "alice")
    answer = create(client, alice, {**ORDER, **change})
    problem(answer, 422, reason)
    assert OTHER_SSN not in answer.text
    assert get(client, alice).json() == {"orders": []}
    # A refusal releases the key: the corrected request goes through under it.
    assert create(client, alice).status_code == 201


def test_bad_requests(client: TestClient, runtime: Runtime) -> None:
    alice = citizen_token(client, runtime, "alice")
    problem(create(client, alice, key=None), 400, "idempotency_key_required")
    problem(create(client, alice, key=""), 400, "idempotency_key_invalid")
    problem(create(client, alice, key="x" * 256), 400, "idempotency_key_invalid")
    problem(create(client, alice, raw=b"{not json"), 400, "invalid_json")
    problem(create(client, alice, raw=b"[]"), 422, "order_invalid")
    assert get(client, alice).json() == {"orders": []}


def test_idempotent_replay_and_reuse(client: TestClient, runtime: Runtime) -> None:
    alice = citizen_token(client, runtime, "alice")
    first = create(client, alice, key="pay-2025")
    again = create(client, alice, key="pay-2025")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert len(get(client, alice).json()["orders"]) == 1
    problem(create(client, alice, {**ORDER, "amount_fen": 50000}, key="pay-2025"), 422, "idempotency_key_reused")
    # Another key is another order, even with the same body.
    assert create(client, alice, key="pay-2026").content != first.content
    assert len(get(client, alice).json()["orders"]) == 2


def test_keys_are_per_caller(client: TestClient, runtime: Runtime) -> None:
    alice, bob = citizen_token(client, runtime, "alice"), citizen_token(client, runtime, "bob")
    backend = backend_token(client, runtime)
    a, b = create(client, alice, key="same"), create(client, bob, key="same")
    e = create(client, backend, {k: v for k, v in ORDER.items() if k != "payer_kind"}, key="same")
    assert a.status_code == b.status_code == e.status_code == 201
    assert len({a.json()["id"], b.json()["id"], e.json()["id"]}) == 3


def test_concurrent_duplicate_is_409(client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = citizen_token(client, runtime, "alice")
    started, proceed = threading.Event(), threading.Event()
    real_create = orders_api._create

    def slow_create(*args: Any) -> Any:
        started.set()
        assert proceed.wait(30)  # a deadlock guard, not a timing assumption
        return real_create(*args)

    monkeypatch.setattr(orders_api, "_create", slow_create)
    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", create(client, alice, key="dup")))
    first.start()
    assert started.wait(30)
    duplicate = create(client, alice, key="dup")
    proceed.set()
    first.join()
    problem(duplicate, 409, "idempotency_in_progress")
    assert results["first"].status_code == 201
    replay = create(client, alice, key="dup")
    assert replay.content == results["first"].content
    assert len(get(client, alice).json()["orders"]) == 1


def test_failed_commit_releases_the_key(client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = citizen_token(client, runtime, "alice")
    from payments.orders import service

    real = service.create

    def failing(db: Any, spec: Any) -> Any:
        real(db, spec)
        raise RuntimeError("the database went away")  # after the insert, before the commit: all rolled back

    monkeypatch.setattr(service, "create", failing)
    problem(create(client, alice, key="crash"), 500, "internal_error")
    monkeypatch.setattr(service, "create", real)
    assert get(client, alice).json() == {"orders": []}
    assert create(client, alice, key="crash").status_code == 201  # not a stale 409, not a replay of the 500


def order_count(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(select(func.count()).select_from(PaymentOrder)) or 0


def die_after_commit(monkeypatch: pytest.MonkeyPatch) -> list[idempotency.Claim]:
    """Make the next create behave like a worker dying between its commit and keeping the response: `finish` fails
    and `release` never runs. Returns the claims seen, so a test can expire the in-flight marker left behind."""
    claims: list[idempotency.Claim] = []

    def dying(runtime: Runtime, claim: idempotency.Claim, *args: Any, **kwargs: Any) -> None:
        claims.append(claim)
        raise RuntimeError("the worker died")

    monkeypatch.setattr(idempotency, "finish", dying)
    monkeypatch.setattr(idempotency, "release", lambda runtime, claim: None)
    return claims


def test_lost_response_is_rebuilt_from_the_order(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = citizen_token(client, runtime, "alice")
    with monkeypatch.context() as patch:
        claims = die_after_commit(patch)
        problem(create(client, alice, key="lost"), 500, "internal_error")
    assert order_count(runtime) == 1 and len(claims) == 1
    problem(create(client, alice, key="lost"), 409, "idempotency_in_progress")  # the marker outlives the worker
    assert runtime.store.take(claims[0].store_key) is not None  # ... until it expires
    [order] = get(client, alice).json()["orders"]

    again = create(client, alice, key="lost")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == order
    # The bytes a fresh create produces: the same order under a new key differs only in id and created_at.
    fresh = create(client, alice, key="fresh")
    assert again.content == fresh.content.replace(fresh.json()["id"].encode(), order["id"].encode()).replace(
        fresh.json()["created_at"].encode(), order["created_at"].encode()
    )
    assert create(client, alice, key="lost").content == again.content  # now from the store again
    problem(create(client, alice, {**ORDER, "amount_fen": 50000}, key="lost"), 422, "idempotency_key_reused")
    assert order_count(runtime) == 2


def test_lost_response_then_another_body_is_422(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = citizen_token(client, runtime, "alice")
    with monkeypatch.context() as patch:
        claims = die_after_commit(patch)
        problem(create(client, alice, key="lost"), 500, "internal_error")
    runtime.store.take(claims[0].store_key)
    problem(create(client, alice, {**ORDER, "amount_fen": 50000}, key="lost"), 422, "idempotency_key_reused")
    assert order_count(runtime) == 1
    # The refusal kept the rebuilt response in the store: the original body is still answered with its order.
    replay = create(client, alice, key="lost")
    assert replay.status_code == 201 and replay.json() == get(client, alice).json()["orders"][0]
    assert order_count(runtime) == 1


def test_lost_response_replays_the_creation_state(client: TestClient, runtime: Runtime) -> None:
    alice = citizen_token(client, runtime, "alice")
    first = create(client, alice, key="k")
    runtime.store.take(claim_key(runtime))  # the store lost the response
    with unit_of_work(runtime.sessions) as db:  # and the order moved on meanwhile
        db.scalars(select(PaymentOrder)).one().state = "paid"
    assert create(client, alice, key="k").content == first.content


def test_duplicate_insert_is_answered_not_500(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests under one key both past the store (the first's marker expired while it ran): the unique key
    digest refuses the second insert, which answers with the first order."""
    alice = citizen_token(client, runtime, "alice")
    first = create(client, alice, key="race")
    runtime.store.take(claim_key(runtime))
    real_earlier = orders_api._earlier
    calls: list[int] = []

    def blind_first(*args: Any) -> Any:  # the pre-check ran before the other request's commit
        calls.append(1)
        return None if len(calls) == 1 else real_earlier(*args)

    monkeypatch.setattr(orders_api, "_earlier", blind_first)
    again = create(client, alice, key="race")
    assert len(calls) == 2  # the pre-check, then the recovery after the refused insert
    assert again.status_code == 201 and again.content == first.content
    runtime.store.take(claim_key(runtime))
    calls.clear()
    problem(create(client, alice, {**ORDER, "amount_fen": 50000}, key="race"), 422, "idempotency_key_reused")
    assert order_count(runtime) == 1


def claim_key(runtime: Runtime) -> str:
    """The store key of the only order's Idempotency-Key: the row keeps the same HMAC `begin` puts in it."""
    with unit_of_work(runtime.sessions) as db:
        digest = db.scalars(select(PaymentOrder.idempotency_key)).one()
    return f"idem:orders:{digest}"


def test_orders_are_held_to_the_operators_tiers(settings_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SSCARD_PAYMENT_TIERS replaces the built-in table for the API: only the operator's grades are accepted."""
    tiers = tmp_path / "tiers.json"
    tiers.write_text(
        json.dumps(
            [{"type": "pension", "region": "110000", "year": 2025, "monthly": False, "choices_fen": [12300, 45600]}]
        )
    )
    rt = Runtime(settings_factory(payment_tiers=tiers))
    prepare(rt, migrate=False)
    try:
        with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as client:
            token = citizen_token(client, rt, "alice")
            problem(create(client, token, ORDER, key="t-1"), 422, "order_invalid")  # 300.00: built-in, not theirs
            answer = create(client, token, {**ORDER, "amount_fen": 45600}, key="t-2")
            assert answer.status_code == 201, answer.text
            other_region = {**ORDER, "amount_fen": 45600, "region": "310000"}  # in the built-in table only
            problem(create(client, token, other_region, key="t-3"), 422, "order_invalid")
    finally:
        rt.close()


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    change=st.dictionaries(
        st.sampled_from([*ORDER, "extra"]),
        json_values | st.sampled_from(["withholding", "card", "2025-01", "110000", "employer", "agent"]),
        max_size=3,
    ),
    drop=st.sets(st.sampled_from(sorted(ORDER)), max_size=2),
)
def test_any_order_body_is_answered_without_a_500(
    client: TestClient, runtime: Runtime, change: dict[str, Any], drop: set[str]
) -> None:
    """Bodies near a good order (fields changed, dropped, added) through the API: 201, or a 4xx problem+json that
    writes nothing and never quotes the SSN."""
    alice = citizen_token(client, runtime, "alice")
    body = {k: v for k, v in {**ORDER, **change}.items() if k not in drop}
    before = _order_count(runtime)
    answer = create(client, alice, body, key=secrets.token_hex(8))
    assert answer.status_code < 500, answer.text
    if answer.status_code != 201:
        assert 400 <= answer.status_code < 500
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["reason"] and OTHER_SSN not in answer.text
        assert _order_count(runtime) == before


def _order_count(runtime: Runtime) -> int:
    with unit_of_work(runtime.sessions) as db:
        return db.scalar(select(func.count()).select_from(PaymentOrder)) or 0
