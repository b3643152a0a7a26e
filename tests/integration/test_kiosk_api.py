"""The kiosk login API in process, on PostgreSQL + Redis and on the embedded default, with a software card
driven directly (tests/e2e does the same through pcscd + vpcd + pyscard)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work
from authsvc.registry import repository
from authsvc.registry import service as registry
from authsvc.runtime import Runtime
from authsvc.tokens import assurance
from card.request_signing import b64url, b64url_decode
from tests.fixtures.service import PIN, Kiosk, add_kiosk, issue
from tests.fixtures.softcard import evidence, open_card

CARDS = [(3, "3des"), (2, "3des"), (2, "sm4")]


@pytest.fixture
def kiosk(client: TestClient, runtime: Runtime, tmp_path: Path) -> Kiosk:
    return Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-1"))


def _login(kiosk: Kiosk, card_path: Path, *, pin: str | None = PIN, terminal_for_card: str | None = None):  # type: ignore[no-untyped-def]
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card_path), challenge, terminal_for_card or kiosk.terminal_id, pin)
    return login_id, body, kiosk.complete(login_id, body)


def _problem(response, status: int, reason: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["reason"] == reason and doc["status"] == status and doc["type"].endswith(reason)
    return doc


def _events(runtime: Runtime) -> list[AuditEvent]:
    """The login attempts' audit events (administration has events of its own)."""
    with unit_of_work(runtime.sessions) as session:
        query = select(AuditEvent).where(AuditEvent.event == "kiosk_card_login").order_by(AuditEvent.id)
        return list(session.scalars(query))


@pytest.mark.parametrize(("generation", "algorithm"), CARDS)
def test_card_and_pin_log_in_and_tokens_verify(
    kiosk: Kiosk, client: TestClient, runtime: Runtime, tmp_path: Path, generation: int, algorithm: str
) -> None:
    card = issue(runtime, tmp_path, generation=generation, algorithm=algorithm)
    _, _, answer = _login(kiosk, card.path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    doc = answer.json()
    acr, amr = assurance.card_login(generation=generation, pin_verified=True)
    assert doc["acr"] == acr and doc["amr"] == amr
    assert doc["identity"]["ssn"] == card.ssn[:6] + "********" + card.ssn[14:]
    assert card.ssn not in answer.text

    jwks = client.get("/jwks.json").json()
    keys = {k["kid"]: jwt.PyJWK(k) for k in jwks["keys"]}
    header = jwt.get_unverified_header(doc["id_token"])
    claims = jwt.decode(
        doc["id_token"], keys[header["kid"]].key, algorithms=["ES256"], audience="kiosk-1", issuer="http://testserver"
    )
    assert claims["sub"] == doc["identity"]["subject"] and len(claims["sub"]) == 32
    assert claims["acr"] == acr and claims["amr"] == amr and claims["exp"] - claims["iat"] == 300
    assert abs(claims["auth_time"] - time.time()) < 60
    access_header = jwt.get_unverified_header(doc["access_token"])
    assert access_header["typ"] == "at+jwt"
    access = jwt.decode(
        doc["access_token"], keys[access_header["kid"]].key, algorithms=["ES256"], audience="sscard-api"
    )
    assert access["client_id"] == "kiosk-1" and access["sub"] == claims["sub"]

    events = _events(runtime)
    assert [(e.outcome, e.reason) for e in events] == [("success", None)]
    assert events[0].card == card.card_number[:2] + "****" + card.card_number[-3:]


def test_the_subject_is_stable_across_logins_and_cards(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    first = issue(runtime, tmp_path, generation=3)
    _, _, one = _login(kiosk, first.path)
    with unit_of_work(runtime.sessions) as session:
        registry.set_card_status(session, first.card_number, "reported_lost")
    second = issue(runtime, tmp_path, generation=2)  # another holder
    replacement = issue(runtime, tmp_path / "new", generation=3) if (tmp_path / "new").mkdir() is None else None
    assert replacement is not None and second is not None
    _, _, two = _login(kiosk, replacement.path)
    assert one.json()["identity"]["subject"] == two.json()["identity"]["subject"]


def test_replayed_card_response_is_refused(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    login_id, body, first = _login(kiosk, card.path)
    assert first.status_code == 200
    _problem(kiosk.complete(login_id, body), 404, "login_unknown")
    # The same card response presented for a fresh challenge does not verify either.
    fresh_id, _ = kiosk.start()
    _problem(kiosk.complete(fresh_id, body), 422, "cryptogram_invalid")


def test_a_response_made_for_another_kiosk_is_refused(
    client: TestClient, kiosk: Kiosk, runtime: Runtime, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=3)
    _, _, answer = _login(kiosk, card.path, terminal_for_card="kiosk-2")
    _problem(answer, 422, "cryptogram_invalid")


def test_another_kiosks_login_cannot_be_completed(
    client: TestClient, kiosk: Kiosk, runtime: Runtime, tmp_path: Path
) -> None:
    other = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-2"))
    card = issue(runtime, tmp_path, generation=2)
    login_id, challenge = kiosk.start()
    foreign = evidence(open_card(card.path), challenge, "kiosk-2", PIN)
    _problem(other.complete(login_id, foreign), 404, "login_unknown")
    _problem(other.post(f"/v1/kiosk/logins/{login_id}/abort", {"reason": "cancelled"}), 404, "login_unknown")
    # Neither spent it: the kiosk that asked for the challenge still completes its login.
    own = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    assert kiosk.complete(login_id, own).status_code == 200


@pytest.mark.parametrize("generation", [3, 2])
def test_altered_holder_data_breaks_the_cryptogram(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, generation: int
) -> None:
    card = issue(runtime, tmp_path, generation=generation)
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    ef06 = b64url_decode(body["ef06"])
    name_at = ef06.index(bytes([0x09])) + 2
    body["ef06"] = b64url(ef06[:name_at] + "王".encode("gb18030") + ef06[name_at + 2 :])
    _problem(kiosk.complete(login_id, body), 422, "cryptogram_invalid")


@pytest.mark.parametrize("generation", [3, 2])
def test_flipped_pin_flag_breaks_the_cryptogram(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, generation: int
) -> None:
    card = issue(runtime, tmp_path, generation=generation)
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, None)
    response = b64url_decode(body["response"])
    body["response"] = b64url(bytes([response[0] | 1]) + response[1:])
    _problem(kiosk.complete(login_id, body), 422, "cryptogram_invalid")


def test_without_the_pin_the_login_is_refused(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    _, _, answer = _login(kiosk, card.path, pin=None)
    _problem(answer, 422, "pin_not_verified")


def test_tampered_certificate_is_refused(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    cert = bytearray(b64url_decode(body["certificate"]))
    cert[-10] ^= 0x01  # inside the issuer's signature
    body["certificate"] = b64url(bytes(cert))
    assert "certificate chain" in _problem(kiosk.complete(login_id, body), 422, "certificate_invalid")["detail"]


def test_a_genuine_certificate_of_another_card_is_refused(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    other = issue(runtime, tmp_path, generation=3, ssn="440305197806230078", name="赵敏")
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    body["certificate"] = evidence(open_card(other.path), kiosk.start()[1], kiosk.terminal_id, PIN)["certificate"]
    _problem(kiosk.complete(login_id, body), 422, "certificate_invalid")


def test_a_certificate_from_a_foreign_ca_is_refused(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, settings_factory, kek: str
) -> None:  # type: ignore[no-untyped-def]
    card = issue(runtime, tmp_path, generation=3)
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    cert = x509.load_der_x509_certificate(b64url_decode(body["certificate"]))
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    rogue = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        forged = forged.add_extension(ext.value, ext.critical)
    body["certificate"] = b64url(forged.sign(rogue, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    _problem(kiosk.complete(login_id, body), 422, "certificate_invalid")


@pytest.mark.parametrize(
    ("status", "reason"), [("reported_lost", "card_lost"), ("frozen", "card_frozen"), ("cancelled", "card_cancelled")]
)
def test_a_card_that_is_not_active_is_refused(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, status: str, reason: str
) -> None:
    card = issue(runtime, tmp_path, generation=2)
    with unit_of_work(runtime.sessions) as session:
        registry.set_card_status(session, card.card_number, status)
    _, _, answer = _login(kiosk, card.path)
    _problem(answer, 422, reason)
    assert [(e.outcome, e.reason) for e in _events(runtime)] == [("failure", reason)]


def test_registry_change_after_issue_is_a_holder_mismatch(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    with unit_of_work(runtime.sessions) as session:
        holder = repository.holder_by_ssn(session, card.ssn)
        assert holder is not None
        holder.name = "张卫"
    _, _, answer = _login(kiosk, card.path)
    _problem(answer, 422, "holder_mismatch")


def test_an_expired_card_is_refused(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    import datetime as dt

    card = issue(runtime, tmp_path, generation=2)
    with unit_of_work(runtime.sessions) as session:
        row = repository.card_by_number(session, card.card_number)
        assert row is not None
        row.expires_on = dt.date.today() - dt.timedelta(days=1)
    _, _, answer = _login(kiosk, card.path)
    _problem(answer, 422, "card_expired")


@pytest.mark.parametrize("generation", [3, 2])
def test_a_card_unknown_to_the_registry_looks_like_any_card_that_fails(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, generation: int
) -> None:
    card = issue(runtime, tmp_path, generation=generation)
    with unit_of_work(runtime.sessions) as session:
        session.delete(repository.card_by_number(session, card.card_number))
    _, _, answer = _login(kiosk, card.path)
    _problem(answer, 422, "cryptogram_invalid")  # no oracle for which card numbers exist


def test_the_login_expires(kiosk: Kiosk, runtime: Runtime, tmp_path: Path, settings_factory) -> None:  # type: ignore[no-untyped-def]
    card = issue(runtime, tmp_path, generation=2)
    login_id, challenge = kiosk.start()
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    runtime.store.take(f"login:{kiosk.terminal_id}:{login_id}")  # what the TTL does when it runs out
    _problem(kiosk.complete(login_id, body), 404, "login_unknown")


# -- kiosk authentication -------------------------------------------------------------------------------------


def test_unsigned_requests_are_refused(client: TestClient, kiosk: Kiosk) -> None:
    answer = client.post("/v1/kiosk/logins", json={})
    _problem(answer, 401, "signature_missing")
    assert answer.headers["www-authenticate"].startswith("Sscard-Signature")


def test_unknown_kiosk_is_refused(client: TestClient, runtime: Runtime, tmp_path: Path) -> None:
    stranger = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-x"))
    with unit_of_work(runtime.sessions) as session:
        session.delete(repository.terminal(session, "kiosk-x"))
    _problem(stranger.post("/v1/kiosk/logins"), 401, "terminal_unknown")


def test_disabled_kiosk_is_refused(kiosk: Kiosk, runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as session:
        registry.set_terminal_status(session, "kiosk-1", "disabled")
    _problem(kiosk.post("/v1/kiosk/logins"), 403, "terminal_disabled")


def test_a_forged_signature_is_refused(client: TestClient, kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    impostor = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-2"))
    impostor.terminal_id = "kiosk-1"  # signs with its own key, claims to be kiosk-1
    _problem(impostor.post("/v1/kiosk/logins"), 401, "signature_invalid")


def test_a_body_changed_in_transit_is_refused(client: TestClient, kiosk: Kiosk) -> None:
    headers = kiosk.headers("/v1/kiosk/logins", b"{}")
    _problem(client.post("/v1/kiosk/logins", content=b'{"x":1}', headers=headers), 401, "signature_invalid")


def test_a_replayed_request_is_refused(client: TestClient, kiosk: Kiosk) -> None:
    headers = {"Content-Type": "application/json", **kiosk.headers("/v1/kiosk/logins", b"{}")}
    assert client.post("/v1/kiosk/logins", content=b"{}", headers=headers).status_code == 201
    _problem(client.post("/v1/kiosk/logins", content=b"{}", headers=headers), 401, "nonce_replayed")


@pytest.mark.parametrize("skew", [-121, 121])
def test_a_request_outside_the_time_window_is_refused(kiosk: Kiosk, skew: int) -> None:
    _problem(kiosk.post("/v1/kiosk/logins", now=time.time() + skew), 401, "timestamp_out_of_window")


# -- malformed input: 400 with a reason, nothing spent -----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"ef05": "AA"}',
        b'{"ef05":"A+/=","ef06":"AA","response":"AAAA"}',
        b'{"ef05":"AA","ef06":"AA","response":"AAAA","extra":1}',
        json.dumps({"ef05": "A" * 5000, "ef06": "AA", "response": "AAAA"}).encode(),
    ],
)
def test_malformed_completion_is_a_400_and_keeps_the_login(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, raw: bytes
) -> None:
    card = issue(runtime, tmp_path, generation=2)
    login_id, challenge = kiosk.start()
    _problem(kiosk.post(f"/v1/kiosk/logins/{login_id}/complete", raw=raw), 400, "invalid_request")
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    assert kiosk.complete(login_id, body).status_code == 200


def test_garbage_card_data_is_refused_cleanly(kiosk: Kiosk) -> None:
    login_id, _ = kiosk.start()
    body = {"ef05": b64url(b"\x01\x05hello"), "ef06": b64url(b"\xff" * 40), "response": b64url(b"\x01" * 65)}
    _problem(kiosk.complete(login_id, body), 422, "card_data_invalid")


def test_unknown_routes_and_methods_are_problems(client: TestClient) -> None:
    _problem(client.get("/v1/nothing"), 404, "not_found")
    _problem(client.get("/v1/kiosk/logins"), 405, "method_not_allowed")


# -- throttling and abort -----------------------------------------------------------------------------------


def test_repeated_failures_for_a_card_are_throttled(
    client: TestClient, runtime: Runtime, tmp_path: Path, settings_factory
) -> None:  # type: ignore[no-untyped-def]
    card = issue(runtime, tmp_path, generation=2)
    kiosks = [Kiosk(client, add_kiosk(runtime, tmp_path, f"kiosk-{i}")) for i in range(2)]
    limit = runtime.settings.throttle_card_failures
    for i in range(limit):
        _, _, answer = _login(kiosks[i % 2], card.path, pin=None)
        _problem(answer, 422, "pin_not_verified")
    _, _, answer = _login(kiosks[0], card.path)  # even with the PIN, from any kiosk
    doc = _problem(answer, 429, "throttled")
    assert 0 < int(answer.headers["retry-after"]) <= runtime.settings.throttle_window
    assert "retry after" in doc["detail"]


def test_aborts_naming_a_card_do_not_lock_its_holder_out(client: TestClient, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    hostile = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-hostile"))
    for _ in range(runtime.settings.throttle_card_failures + 1):
        login_id, _ = hostile.start()
        body = {"reason": "pin_wrong", "tries_left": 2, "card_number": card.card_number}
        assert hostile.post(f"/v1/kiosk/logins/{login_id}/abort", body).status_code == 204
    honest = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-honest"))
    _, _, answer = _login(honest, card.path)
    assert answer.status_code == 200, answer.text


def test_failures_with_an_unproven_card_number_do_not_count_against_that_card(
    client: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    card = issue(runtime, tmp_path, generation=2)
    hostile = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-hostile"))
    for _ in range(runtime.settings.throttle_card_failures + 1):
        login_id, challenge = hostile.start()
        body = evidence(open_card(card.path), challenge, hostile.terminal_id, PIN)
        body["response"] = b64url(b"\x01" + b"\x00" * 8)  # the victim's card data, a made-up cryptogram
        _problem(hostile.complete(login_id, body), 422, "cryptogram_invalid")
    honest = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-honest"))
    assert _login(honest, card.path)[2].status_code == 200


def test_a_kiosk_cannot_outrun_its_throttle_with_challenges_fetched_in_advance(
    client: TestClient, runtime: Runtime, tmp_path: Path
) -> None:
    kiosk = Kiosk(client, add_kiosk(runtime, tmp_path, "kiosk-greedy"))
    limit = runtime.settings.throttle_terminal_failures
    stock = [kiosk.start()[0] for _ in range(limit + 3)]
    garbage = {"ef05": b64url(b"\x01"), "ef06": b64url(b"\x08"), "response": b64url(b"\x00\x00")}
    answers = [kiosk.complete(login_id, garbage).status_code for login_id in stock]
    assert answers[:limit] == [422] * limit and set(answers[limit:]) == {429}
    _problem(kiosk.post("/v1/kiosk/logins"), 429, "throttled")
    assert [e.reason for e in _events(runtime)][-1] == "throttled"


def test_tries_left_goes_with_a_wrong_pin_only(kiosk: Kiosk) -> None:
    login_id, _ = kiosk.start()
    _problem(
        kiosk.post(f"/v1/kiosk/logins/{login_id}/abort", {"reason": "cancelled", "tries_left": 1}),
        400,
        "invalid_request",
    )


def test_an_oversized_body_is_refused_before_anything_else(client: TestClient, kiosk: Kiosk) -> None:
    big = b"{" + b" " * (20 * 1024) + b"}"
    _problem(client.post("/v1/kiosk/logins", content=big), 413, "body_too_large")
    _problem(kiosk.post("/v1/kiosk/logins", raw=big), 413, "body_too_large")


def test_abort_spends_the_login_and_is_audited(kiosk: Kiosk, runtime: Runtime, tmp_path: Path) -> None:
    card = issue(runtime, tmp_path, generation=3)
    login_id, challenge = kiosk.start()
    answer = kiosk.post(
        f"/v1/kiosk/logins/{login_id}/abort", {"reason": "pin_wrong", "tries_left": 2, "card_number": card.card_number}
    )
    assert answer.status_code == 204
    body = evidence(open_card(card.path), challenge, kiosk.terminal_id, PIN)
    _problem(kiosk.complete(login_id, body), 404, "login_unknown")
    events = _events(runtime)
    assert next((e.reason, e.detail) for e in events) == ("pin_wrong", {"tries_left": 2})
    assert events[0].card is not None and card.card_number not in events[0].card
    _problem(kiosk.post(f"/v1/kiosk/logins/{login_id}/abort", {"reason": "cancelled"}), 404, "login_unknown")
    _problem(kiosk.post(f"/v1/kiosk/logins/{login_id}/abort", {"reason": "bored"}), 400, "invalid_request")


def test_audit_and_logs_never_hold_full_identifiers(
    kiosk: Kiosk, runtime: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    card = issue(runtime, tmp_path, generation=3)
    _login(kiosk, card.path)
    with unit_of_work(runtime.sessions) as session:
        registry.set_card_status(session, card.card_number, "frozen")
    _login(kiosk, card.path)
    dump = json.dumps([[e.card, e.subject, e.detail, e.reason] for e in _events(runtime)]) + caplog.text
    assert len(_events(runtime)) == 2
    for secret in (card.ssn, card.card_number, "张伟", base64.b64encode("张伟".encode()).decode()):
        assert secret not in dump


@pytest.fixture
def fuzz_kiosk(settings_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A kiosk whose own failure throttle is out of the way: the fuzzer fails on purpose, hundreds of times."""
    from authsvc.app import create_app
    from authsvc.cli import prepare

    rt = Runtime(settings_factory(throttle_terminal_failures=100000))
    prepare(rt, migrate=False)
    with TestClient(create_app(runtime=rt), raise_server_exceptions=False) as client:
        yield Kiosk(client, add_kiosk(rt, tmp_path, "kiosk-fuzz"))
    rt.close()


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ef05=st.binary(max_size=300),
    ef06=st.binary(max_size=300),
    response=st.binary(min_size=1, max_size=120),
    certificate=st.none() | st.binary(max_size=900),
)
def test_fuzzed_card_evidence_is_refused_with_a_reason_never_a_500(
    fuzz_kiosk: Kiosk, ef05: bytes, ef06: bytes, response: bytes, certificate: bytes | None
) -> None:
    kiosk = fuzz_kiosk
    login_id, _ = kiosk.start()
    body = {"ef05": b64url(ef05 or b"\x00"), "ef06": b64url(ef06 or b"\x00"), "response": b64url(response + b"\x00")}
    if certificate:
        body["certificate"] = b64url(certificate)
    answer = kiosk.complete(login_id, body)
    assert answer.status_code in (400, 422), answer.text
    assert answer.headers["content-type"] == "application/problem+json"
