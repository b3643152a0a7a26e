"""The face check under test: the service over real HTTP (both backends) with the sandbox vendor on a loopback port,
their keys exchanged through keys/channel_keys/, a cardholder whose reference photo is in the vendor's gallery, and
pending logins that a card already identified."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from authsvc.audit.models import AuditEvent
from authsvc.database import unit_of_work
from authsvc.demo_portal import serve_in_thread
from authsvc.liveness import wire
from authsvc.liveness.models import LivenessSession
from authsvc.liveness.photos import set_reference_photo
from authsvc.liveness.sandbox import Delivery, LivenessSandbox
from authsvc.login import face, pending
from authsvc.registry import service as registry
from authsvc.tokens import assurance
from authsvc.tokens.issuing import Authentication
from keys.channel_keys import import_key
from tests.fixtures.service import HOLDERS, LiveServer, free_port

APP_ID = "sscard-test"
OUR_KEY_ID = "sscard-1"
VENDOR_KEY_ID = "vendor-2026"
REFERENCE = "gallery:110105-0001"
SSN, NAME = HOLDERS[3]
CARD_PIN = ["sc", "hwk", "pin"]


@dataclass
class Login:
    login_id: str
    secret: str
    browser: httpx.Client


@dataclass
class FaceHarness:
    service: LiveServer
    sandbox: LivenessSandbox
    subject: str

    @property
    def runtime(self):  # type: ignore[no-untyped-def]
        return self.service.runtime

    def login(self, *, acr: str = assurance.HIGH, amr: list[str] | None = None, subject: str | None = None) -> Login:
        """A pending login for a portal asking `acr`, already identified by `amr` (a card + PIN) unless empty."""
        store = self.runtime.store
        secret = pending.new_browser_secret()
        request = pending.LoginRequest(
            client_id="portal-test",
            client_name="社保查询",
            redirect_uri="http://127.0.0.1:9/cb",
            scope=["openid"],
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            acr=acr,
            locale="en",
        )
        created = pending.create(store, request, secret, self.runtime.settings.pending_login_ttl)
        proven = CARD_PIN if amr is None else amr
        if proven:
            progress = pending.complete(
                store, created.login_id, subject=subject or self.subject, amr=proven, method="card"
            )
            assert not progress.done and assurance.METHOD_FACE in progress.missing
        cookie = {pending.browser_cookie(False): secret}
        browser = httpx.Client(base_url=self.service.url, cookies=cookie, timeout=30, trust_env=False)
        return Login(created.login_id, secret, browser)

    def start(self, login: Login) -> httpx.Response:
        return login.browser.post(f"/login/{login.login_id}/face")

    def started(self, login: Login) -> str:
        """Start the face check; the vendor's session id."""
        answer = self.start(login)
        assert answer.status_code == 200, answer.text
        return answer.json()["capture_url"].rsplit("/", 1)[1]

    def capture(self, login: Login, outcome: str = "right_person", *faults: str) -> list[Delivery]:
        session_id = self.started(login)
        if faults:
            self.sandbox.session_faults(session_id, *faults)
        return self.sandbox.capture(session_id, outcome)

    def face_state(self, login: Login) -> dict[str, Any] | None:
        found = pending.get(self.runtime.store, login.login_id)
        assert found is not None
        return face.state(self.runtime, found)

    def status(self, login: Login) -> dict[str, Any]:
        found = pending.get(self.runtime.store, login.login_id)
        assert found is not None
        return pending.status(self.runtime.store, found)

    def finish(self, login: Login) -> Authentication | None:
        finished = pending.finish(self.runtime.store, login.login_id, login.secret)
        return None if finished is None else finished[1]

    def move_clock(self, seconds: float) -> None:
        """The service's liveness clock runs `seconds` ahead (instead of the test waiting)."""
        import time

        self.runtime.liveness.clock = lambda: time.time() + seconds

    def rows(self, login: Login) -> list[LivenessSession]:
        with unit_of_work(self.runtime.sessions) as db:
            query = select(LivenessSession).where(LivenessSession.login_id == login.login_id)
            return list(db.scalars(query.order_by(LivenessSession.id)))

    def verdict_events(self) -> list[tuple[str, str | None]]:
        with unit_of_work(self.runtime.sessions) as db:
            query = select(AuditEvent).where(AuditEvent.event == "liveness_verdict").order_by(AuditEvent.id)
            return [(e.outcome, e.reason) for e in db.scalars(query)]

    def import_vendor_key(self, key: wire.SigningKey) -> str:
        with unit_of_work(self.runtime.sessions) as db:
            record = import_key(
                db,
                self.runtime.sealer,
                channel="liveness",
                kind="liveness-vendor-key",
                data=key.public_pem(),
                serial=key.key_id,
            )
            return record.kid


def problem(answer: Delivery | httpx.Response) -> tuple[int, str]:
    if isinstance(answer, Delivery):
        return answer.status, json.loads(answer.answer).get("reason") or json.loads(answer.answer).get("code")
    return answer.status_code, answer.json().get("reason")


OK = (200, "OK")


def start_sandbox(our_key: wire.SigningKey) -> tuple[LivenessSandbox, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sandbox = LivenessSandbox(
        APP_ID, wire.KeyRing.of((our_key.key_id, our_key.private_key.public_key())), public_url=url
    )
    sandbox.add_reference(REFERENCE)
    return sandbox, serve_in_thread(sandbox.app, port)


def harness(live_server_factory: Any, **overrides: Any) -> Iterator[FaceHarness]:
    our_key = wire.SigningKey.generate(OUR_KEY_ID)
    sandbox, server = start_sandbox(our_key)
    try:
        settings: dict[str, Any] = {
            "liveness_vendor": "sandbox",
            "liveness_base_url": sandbox.public_url,
            "liveness_app_id": APP_ID,
            **overrides,
        }
        service = live_server_factory(**settings)
        runtime = service.runtime
        with unit_of_work(runtime.sessions) as db:
            holder = registry.add_cardholder(db, ssn=SSN, name=NAME)
            set_reference_photo(db, ssn=SSN, photo_ref=REFERENCE)
            import_key(
                db,
                runtime.sealer,
                channel="liveness",
                kind="liveness-api-key",
                data=our_key.private_pem(),
                serial=OUR_KEY_ID,
            )
            vendor_key = sandbox.keys[sandbox.signing_key_id]
            import_key(
                db,
                runtime.sealer,
                channel="liveness",
                kind="liveness-vendor-key",
                data=vendor_key.public_pem(),
                serial=vendor_key.key_id,
            )
            subject = holder.subject
        yield FaceHarness(service, sandbox, subject)
    finally:
        server.should_exit = True


def other_subject() -> str:
    return secrets.token_hex(16)
