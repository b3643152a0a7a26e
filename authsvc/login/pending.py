"""Pending browser logins: one per authorization request that needs the citizen to authenticate.

`/authorize` creates one and sends the browser to the login page; authenticators (the card through `sscard helper`,
the e-card app scanning a QR code, a face check) each prove their checks and call `complete`. The checks of one login
add up (and with a step-up session's own), in whatever order the policy offers them (`assurance.missing`), until the
wanted level is reached; the page polls `status` and, once done, continues to `finish`, which hands the request and
the authentication back exactly once. A pending login is bound to the browser that started it by a random cookie
(only its hash is kept).

Shared-store keys, each one written and read on its own (so `put/get/take/add` suffice, also on Redis Cluster):
  pending:req:<id>             the request (put at creation, taken by `finish`)
  pending:chal:<id>:<method>   an authenticator's current single-use challenge (put per attempt, taken to verify)
  pending:done:<id>            the authentication (add: the first completion wins; taken by `finish`)
  pending:part:<id>            the checks proven so far and whom they identify, until the level is reached (put)
  pending:fail:<id>            the last refusal, for the page to show (put)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from authsvc.store import Store
from authsvc.tokens import assurance
from authsvc.tokens.issuing import Authentication

BROWSER_COOKIE = "sscard_login"
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Time the browser has, after the authenticator finished, to come back for its code.
MIN_RESULT_TTL = 30


@dataclass(frozen=True)
class LoginRequest:
    """The validated authorization request, and what the login page needs to show."""

    client_id: str
    client_name: str
    redirect_uri: str
    scope: list[str]
    code_challenge: str
    acr: str  # the level the login must reach
    locale: str
    state: str | None = None
    nonce: str | None = None
    dpop_jkt: str | None = None
    # Step-up: the browser's session already proved this person (at a lower level). Only the missing factors are
    # asked, and an authenticator that proves somebody else is refused.
    subject: str | None = None
    amr: list[str] = field(default_factory=list)
    session_acr: str | None = None
    # The session whose factors are carried: if it ends before the login continues, they no longer count.
    session_sid: str | None = None

    @property
    def step_up(self) -> bool:
        return self.subject is not None


@dataclass(frozen=True)
class PendingLogin:
    login_id: str
    request: LoginRequest
    browser: str  # SHA-256 (hex) of the browser's binding cookie
    expires_at: int

    def seconds_left(self, now: float | None = None) -> int:
        return max(0, self.expires_at - int(time.time() if now is None else now))


@dataclass(frozen=True)
class Progress:
    """Where a login stands after a method completed: the authentication reached so far (level and merged amr) and
    whether it is enough; if not, the methods still worth offering."""

    auth: Authentication
    done: bool
    missing: list[str]


class CompletionRefused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def valid_id(login_id: str) -> bool:
    return bool(_ID.fullmatch(login_id))


def browser_cookie(secure: bool) -> str:
    """The binding cookie's name: "__Host-" on https, so that a sibling subdomain cannot plant a secret it knows."""
    return ("__Host-" if secure else "") + BROWSER_COOKIE


def new_browser_secret() -> str:
    return secrets.token_urlsafe(32)


def create(store: Store, request: LoginRequest, browser_secret: str, ttl: int) -> PendingLogin:
    pending = PendingLogin(secrets.token_urlsafe(24), request, _hash(browser_secret), int(time.time()) + ttl)
    store.put(f"pending:req:{pending.login_id}", json.dumps(_encode(pending)).encode(), ttl)
    return pending


def _encode(pending: PendingLogin) -> dict[str, Any]:
    return {"request": asdict(pending.request), "browser": pending.browser, "expires_at": pending.expires_at}


def get(store: Store, login_id: str) -> PendingLogin | None:
    if not valid_id(login_id):
        return None
    raw = store.get(f"pending:req:{login_id}")
    return None if raw is None else _decode(login_id, raw)


def _decode(login_id: str, raw: bytes | dict[str, Any]) -> PendingLogin:
    doc = json.loads(raw) if isinstance(raw, bytes) else raw
    return PendingLogin(login_id, LoginRequest(**doc["request"]), doc["browser"], int(doc["expires_at"]))


def bound_to(pending: PendingLogin, browser_secret: str | None) -> bool:
    """Whether this browser started the login (constant-time)."""
    return bool(browser_secret) and hmac.compare_digest(pending.browser, _hash(browser_secret or ""))


# -- authenticators ---------------------------------------------------------------------------------------


def put_challenge(store: Store, pending: PendingLogin, method: str, challenge: bytes, ttl: int) -> None:
    """A fresh challenge for one attempt of `method`; it replaces any earlier one, so older answers are void."""
    store.put(f"pending:chal:{pending.login_id}:{method}", challenge, max(1, min(ttl, pending.seconds_left())))


def take_challenge(store: Store, login_id: str, method: str) -> bytes | None:
    """Spend the challenge: whatever the attempt's outcome, it is never usable twice."""
    if not valid_id(login_id):
        return None
    return store.take(f"pending:chal:{login_id}:{method}")


def _partial(store: Store, login_id: str) -> dict[str, Any] | None:
    raw = store.get(f"pending:part:{login_id}")
    return None if raw is None else json.loads(raw)


def subject_of(store: Store, login: PendingLogin) -> str | None:
    """Whom this login is about so far: the step-up session's person, or the one an earlier method identified."""
    if login.request.subject is not None:
        return login.request.subject
    partial = _partial(store, login.login_id)
    return None if partial is None else str(partial["subject"])


def proven(store: Store, login: PendingLogin) -> list[str]:
    """The checks this login can count so far: a step-up session's and those of earlier methods."""
    partial = _partial(store, login.login_id)
    return [*login.request.amr, *(partial["amr"] if partial else [])]


def complete(store: Store, login_id: str, *, subject: str, amr: list[str], method: str) -> Progress:
    """Record that an authenticator, after checking its own factors, proved `amr` for `subject` in this login.

    The checks add up with those proven before in this login (and a step-up session's), all of one person. Once the
    wanted level is reached the login is done and the browser may continue; until then the checks are kept and
    `Progress.missing` says what else to offer. Raises CompletionRefused: unknown or expired login, another person
    than the one identified before, or a login completed already (of two concurrent completions only one wins).
    """
    login = get(store, login_id)
    if login is None:
        raise CompletionRefused("login_unknown", "no such login is pending (expired or already used)")
    if store.get(f"pending:done:{login_id}") is not None:
        raise CompletionRefused("login_completed", "this login has been completed already")
    known = subject_of(store, login)
    if known is not None and not hmac.compare_digest(known.encode(), subject.encode()):
        raise CompletionRefused("subject_mismatch", "this is not the person this sign-in is for")
    merged = list(dict.fromkeys([*proven(store, login), *amr]))
    level, reported = assurance.grade(merged)
    if level is None:
        raise CompletionRefused("no_level", "these checks alone identify nobody")
    auth = Authentication(subject=subject, auth_time=int(time.time()), acr=level, amr=reported)
    request = login.request
    if not assurance.satisfies(level, request.acr):
        doc = {"subject": subject, "amr": merged}
        store.put(f"pending:part:{login_id}", json.dumps(doc).encode(), max(1, login.seconds_left()))
        return Progress(auth, False, assurance.missing(merged, request.acr))
    doc = {"auth": asdict(auth), "method": method, "pending": _encode(login)}
    if not store.add(f"pending:done:{login_id}", json.dumps(doc).encode(), max(MIN_RESULT_TTL, login.seconds_left())):
        raise CompletionRefused("login_completed", "this login has been completed already")
    return Progress(auth, True, [])


def fail(store: Store, pending: PendingLogin, reason: str, extra: dict[str, Any] | None = None) -> None:
    """Tell the waiting page why the last attempt failed (it may try again while the login is pending)."""
    doc = {"reason": reason, **(extra or {})}
    store.put(f"pending:fail:{pending.login_id}", json.dumps(doc).encode(), max(1, pending.seconds_left()))


def status(store: Store, pending: PendingLogin) -> dict[str, Any]:
    if store.get(f"pending:done:{pending.login_id}") is not None:
        return {"status": "done"}
    have = proven(store, pending)
    answer: dict[str, Any] = {
        "status": "pending",
        "reached": assurance.grade(have)[0],
        "missing": assurance.missing(have, pending.request.acr),
    }
    failed = store.get(f"pending:fail:{pending.login_id}")
    if failed is not None:
        answer["last_failure"] = json.loads(failed)
    return answer


def finish(store: Store, login_id: str, browser_secret: str | None) -> tuple[PendingLogin, Authentication, str] | None:
    """The request, the authentication and the method, once, and only for the browser that started the login: of
    two continuing tabs only one gets it. The request comes with the result, so a login completed in its last
    seconds still continues after the request's own key has expired."""
    if not valid_id(login_id):
        return None
    done = store.get(f"pending:done:{login_id}")
    if done is None:
        return None
    result = json.loads(done)
    login = _decode(login_id, result["pending"])
    if not bound_to(login, browser_secret) or store.take(f"pending:done:{login_id}") is None:
        return None
    store.take(f"pending:req:{login_id}")
    store.take(f"pending:part:{login_id}")
    return login, Authentication(**result["auth"]), result["method"]


def cancel(store: Store, login_id: str) -> bool:
    """The citizen gave up: the request and any result are gone, so nothing can complete or continue it."""
    if not valid_id(login_id):
        return False
    request = store.take(f"pending:req:{login_id}")
    result = store.take(f"pending:done:{login_id}")
    store.take(f"pending:part:{login_id}")
    return request is not None or result is not None
