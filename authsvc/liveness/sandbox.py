"""A face-liveness vendor that speaks authsvc/liveness/wire.py, for tests and demonstrations: it verifies our signed
requests, keeps a gallery of reference photo ids, serves the capture page the citizen's phone opens, and posts the
signed verdict to our callback. It can misbehave on request.

The capture page (`capture_url`) is plain HTML with three form buttons instead of a camera: "Look into the camera"
(the right person: live, score 96.5), "Someone else" (live, score 31) and "Photo of a photo" (not live). No script,
so its CSP allows none.

Faults, for every verdict (`faults.callback`) or one session (`session_faults`):
  duplicate       the verdict twice, each copy signed anew (a retry)
  concurrent      CONCURRENT_COPIES copies signed anew, posted at the same moment
  replay          the same signed message twice (same nonce)
  late / hold     kept until `release()` (the test first moves the service's clock past the session's time)
  fail_then_pass  a failed verdict first, then the real one (out of order)
  wrong_biz_ref   the verdict names another biz_ref
  unsigned        without signature headers
  wrong_key       signed by a key the service does not know, under the current key id
  stale           dated an hour ago
  never           never sent
Two sessions' verdicts swapped: hold both, then `release(reverse=True)`.
Key rotation: `new_key(key_id)` adds a key, `use_key(key_id)` signs with it from then on.

Driven in-process (`LivenessSandbox` methods) or over HTTP (`/sandbox/...`, for the standalone process).
Run alone: `authsvc sandbox liveness --port 18130` or `python -m authsvc.liveness.sandbox --port 18130`; it prints one
line of JSON (its key ids and public keys, and our test key if none was given) before it serves.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from authsvc.liveness import wire
from authsvc.liveness.vendor import CallbackRejected

log = logging.getLogger("sscard.sandbox.liveness")

Sender = Callable[[str, dict[str, str], bytes], tuple[int, bytes]]  # url, headers, body -> status, response body
CONCURRENT_COPIES = 4
FAULTS = (
    "duplicate",
    "concurrent",
    "replay",
    "late",
    "hold",
    "fail_then_pass",
    "wrong_biz_ref",
    "unsigned",
    "wrong_key",
    "stale",
    "never",
)
OUTCOMES: dict[str, tuple[bool, float]] = {
    "right_person": (True, 96.5),
    "someone_else": (True, 31.0),
    "photo_of_photo": (False, 88.0),
}
CSP = "default-src 'none'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


def _default_sender(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=10, trust_env=False)
    except httpx.HTTPError as exc:
        return 0, type(exc).__name__.encode()
    return answer.status_code, answer.content


@dataclass
class Faults:
    callback: str | None = None  # one of FAULTS, for every verdict
    http_status: int | None = None  # the API answers this, unsigned


@dataclass
class CaptureSession:
    session_id: str
    biz_ref: str
    reference_id: str
    callback_url: str
    return_url: str | None
    expires_at: float
    faults: set[str] = field(default_factory=set)
    outcome: str | None = None


@dataclass(frozen=True)
class Delivery:
    url: str
    status: int
    answer: bytes
    session_id: str
    live: bool


class LivenessSandbox:
    def __init__(
        self,
        app_id: str,
        client_keys: wire.KeyRing,
        *,
        public_url: str = "",
        key_id: str = "vendor-2026",
        clock: Callable[[], float] = time.time,
        sender: Sender = _default_sender,
    ) -> None:
        self.app_id = app_id
        self.client_keys = client_keys
        self.public_url = public_url.rstrip("/")  # where the citizen's device reaches the capture pages
        self.clock = clock
        self.sender = sender
        self.faults = Faults()
        self.keys: dict[str, wire.SigningKey] = {key_id: wire.SigningKey.generate(key_id)}
        self.signing_key_id = key_id
        self.gallery: set[str] = set()
        self.sessions: dict[str, CaptureSession] = {}
        self.held: list[tuple[CaptureSession, str, dict[str, str], bytes, bool]] = []
        self.sent: list[Delivery] = []
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        self.app = self._build_app()

    # --- driver ------------------------------------------------------------------------------------------------

    def add_reference(self, reference_id: str) -> None:
        self.gallery.add(reference_id)

    def new_key(self, key_id: str) -> wire.SigningKey:
        self.keys[key_id] = wire.SigningKey.generate(key_id)
        return self.keys[key_id]

    def use_key(self, key_id: str) -> None:
        if key_id not in self.keys:
            raise KeyError(key_id)
        self.signing_key_id = key_id

    def session_faults(self, session_id: str, *faults: str) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults: {unknown}")
        self.sessions[session_id].faults.update(faults)

    def describe(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "signing_key_id": self.signing_key_id,
            "vendor_keys": {kid: key.public_pem().decode() for kid, key in self.keys.items()},
        }

    def capture(self, session_id: str, outcome: str) -> list[Delivery]:
        """The citizen finished the capture: the verdict is judged and posted (faults permitting). Returns the
        deliveries made now (none when held or never sent)."""
        live, score = OUTCOMES[outcome]
        with self._lock:
            session = self.sessions[session_id]
            session.outcome = outcome
        return self.deliver(session, live=live, score=score)

    def signed_callback(
        self,
        session: CaptureSession,
        *,
        live: bool,
        score: float,
        at: float | None = None,
        key: wire.SigningKey | None = None,
        biz_ref: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        now = self.clock() if at is None else at
        body = wire.callback_body(
            session.session_id,
            biz_ref or session.biz_ref,
            live=live,
            score=score,
            event_time=datetime.fromtimestamp(now, UTC),
        )
        signer = key or self.keys[self.signing_key_id]
        headers = wire.sign_headers(signer, wire.CALLBACK, self.app_id, body, now=now)
        return {**headers, "Content-Type": "application/json"}, body

    def deliver(self, session: CaptureSession, *, live: bool, score: float) -> list[Delivery]:
        fault = self.faults.callback
        faults = session.faults | ({fault} if fault else set())
        if "never" in faults:
            return []
        copies: list[tuple[dict[str, str], bytes, bool]] = []
        if "fail_then_pass" in faults:
            copies.append((*self.signed_callback(session, live=False, score=12.0), False))
        if "unsigned" in faults:
            _signed, body = self.signed_callback(session, live=live, score=score)
            copies.append(({"Content-Type": "application/json"}, body, live))
        elif "wrong_key" in faults:
            stranger = wire.SigningKey.generate(self.signing_key_id)
            copies.append((*self.signed_callback(session, live=live, score=score, key=stranger), live))
        elif "stale" in faults:
            copies.append((*self.signed_callback(session, live=live, score=score, at=self.clock() - 3600), live))
        elif "wrong_biz_ref" in faults:
            other = secrets.token_urlsafe(24)
            copies.append((*self.signed_callback(session, live=live, score=score, biz_ref=other), live))
        else:
            count = 2 if "duplicate" in faults else CONCURRENT_COPIES if "concurrent" in faults else 1
            copies += [(*self.signed_callback(session, live=live, score=score), live) for _ in range(count)]
            if "replay" in faults:
                copies.append(copies[-1])
        if faults & {"late", "hold"}:
            with self._lock:
                self.held += [(session, session.callback_url, h, b, lv) for h, b, lv in copies]
            return []
        if "concurrent" in faults:
            return self._post_together(session, copies)
        return [self._post(session, session.callback_url, h, b, lv) for h, b, lv in copies]

    def release(self, *, reverse: bool = False) -> list[Delivery]:
        with self._lock:
            held, self.held = self.held, []
        ordered = list(reversed(held)) if reverse else held
        return [self._post(session, url, headers, body, live) for session, url, headers, body, live in ordered]

    def _post(self, session: CaptureSession, url: str, headers: dict[str, str], body: bytes, live: bool) -> Delivery:
        status, answer = self.sender(url, headers, body)
        delivery = Delivery(url, status, answer, session.session_id, live)
        with self._lock:
            self.sent.append(delivery)
        return delivery

    def _post_together(
        self, session: CaptureSession, copies: list[tuple[dict[str, str], bytes, bool]]
    ) -> list[Delivery]:
        barrier = threading.Barrier(len(copies))
        results: list[Delivery | None] = [None] * len(copies)

        def one(index: int, headers: dict[str, str], body: bytes, live: bool) -> None:
            barrier.wait()
            results[index] = self._post(session, session.callback_url, headers, body, live)

        threads = [threading.Thread(target=one, args=(i, *copy)) for i, copy in enumerate(copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [r for r in results if r is not None]

    # --- the vendor's API ----------------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="liveness vendor sandbox", docs_url=None, redoc_url=None)
        app.add_api_route(wire.SESSIONS_PATH, self._open_session, methods=["POST"], response_class=Response)
        app.add_api_route("/capture/{session_id}", self._capture_page, methods=["GET"], response_class=HTMLResponse)
        app.add_api_route("/capture/{session_id}", self._capture_done, methods=["POST"], response_class=HTMLResponse)
        app.add_api_route("/sandbox/state", self._state, methods=["GET"])
        app.add_api_route("/sandbox/faults", self._set_faults, methods=["POST"])
        app.add_api_route("/sandbox/sessions/{session_id}/faults", self._set_session_faults, methods=["POST"])
        app.add_api_route("/sandbox/references", self._add_reference, methods=["POST"])
        app.add_api_route("/sandbox/release", self._release, methods=["POST"])
        app.add_api_route("/sandbox/keys", self._new_key, methods=["POST"])
        return app

    async def _open_session(self, request: Request) -> Response:
        body = await request.body()
        if self.faults.http_status is not None:
            return Response(b"upstream error", status_code=self.faults.http_status)
        nonce = request.headers.get(wire.H_NONCE, "")
        try:
            signed = wire.verify_headers(
                request.headers,
                body,
                purpose=wire.request_purpose(wire.SESSIONS_PATH),
                keys=self.client_keys,
                account=self.app_id,
                now=self.clock(),
                max_age=300,
                max_ahead=30,
            )
            with self._lock:
                if signed.nonce in self._nonces:
                    raise CallbackRejected(wire.RejectReason.STALE, "nonce already used")
                self._nonces.add(signed.nonce)
            answer = self._new_session(wire.loads(body))
        except CallbackRejected as exc:
            if not wire.NONCE.fullmatch(nonce):
                return Response(b"bad request", status_code=400)
            answer = {"code": "REQUEST_REFUSED", "message": f"{exc.reason}: {exc.message}"}
        raw = wire.dumps(answer)
        headers = wire.sign_headers(
            self.keys[self.signing_key_id],
            wire.response_purpose(wire.SESSIONS_PATH),
            self.app_id,
            raw,
            now=self.clock(),
            nonce=nonce,
        )
        return Response(raw, media_type="application/json", headers=headers)

    def _new_session(self, doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("app_id") != self.app_id:
            return {"code": "INVALID_REQUEST", "message": "app_id"}
        reference = wire.text(doc, "reference_id", wire.REFERENCE)
        biz_ref = wire.text(doc, "biz_ref", wire.BIZ_REF)
        callback_url, expires_in = doc.get("callback_url"), doc.get("expires_in")
        if not isinstance(callback_url, str) or not callback_url.startswith(("http://", "https://")):
            return {"code": "INVALID_REQUEST", "message": "callback_url"}
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= 3600:
            return {"code": "INVALID_REQUEST", "message": "expires_in"}
        if reference not in self.gallery:
            return {"code": "REFERENCE_UNKNOWN", "message": "no such reference photo in the gallery"}
        return_url = doc.get("return_url") if isinstance(doc.get("return_url"), str) else None
        session = CaptureSession(
            "LV" + secrets.token_hex(12), biz_ref, reference, callback_url, return_url, self.clock() + expires_in
        )
        with self._lock:
            self.sessions[session.session_id] = session
        base = self.public_url or ""
        return {
            "code": "OK",
            "session_id": session.session_id,
            "capture_url": f"{base}/capture/{session.session_id}",
            "expires_in": expires_in,
        }

    def _page(self, title: str, inner: str, status: int = 200) -> HTMLResponse:
        doc = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title></head>"
            f"<body><main><h1>{html.escape(title)}</h1>{inner}</main></body></html>"
        )
        return HTMLResponse(
            doc, status_code=status, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
        )

    def _capture_page(self, session_id: str) -> HTMLResponse:
        session = self.sessions.get(session_id)
        if session is None or session.outcome is not None or self.clock() > session.expires_at:
            return self._page("Face check", "<p>This face check is over or unknown.</p>", 404)
        buttons = "".join(
            f'<button type="submit" name="outcome" value="{value}">{html.escape(label)}</button> '
            for value, label in (
                ("right_person", "Look into the camera"),
                ("someone_else", "Someone else"),
                ("photo_of_photo", "Photo of a photo"),
            )
        )
        form = f'<p>Sandbox vendor: choose what the camera sees.</p><form method="post">{buttons}</form>'
        return self._page("Face check", form)

    async def _capture_done(self, session_id: str, request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        outcome = (form.get("outcome") or [""])[0]
        session = self.sessions.get(session_id)
        if session is None or outcome not in OUTCOMES or session.outcome is not None:
            return self._page("Face check", "<p>This face check is over or unknown.</p>", 404)
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.capture, session_id, outcome)
        return self._page("Face check done", "<p>Done. You can return to the page on your computer.</p>")

    # --- control API (the standalone process) ---------------------------------------------------------------------

    def _state(self) -> JSONResponse:
        return JSONResponse(
            {
                **self.describe(),
                "sessions": {
                    sid: {"outcome": s.outcome, "faults": sorted(s.faults)} for sid, s in self.sessions.items()
                },
                "sent": [{"session_id": d.session_id, "status": d.status, "live": d.live} for d in self.sent],
                "held": len(self.held),
            }
        )

    async def _set_faults(self, request: Request) -> JSONResponse:
        doc = json.loads(await request.body() or b"{}")
        callback = doc.get("callback")
        if callback is not None and callback not in FAULTS:
            return JSONResponse({"error": f"callback must be one of {FAULTS}"}, status_code=400)
        self.faults = Faults(callback=callback, http_status=doc.get("http_status"))
        return JSONResponse({"callback": callback, "http_status": self.faults.http_status})

    async def _set_session_faults(self, session_id: str, request: Request) -> JSONResponse:
        doc = json.loads(await request.body() or b"{}")
        try:
            self.session_faults(session_id, *doc.get("faults", []))
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"faults": sorted(self.sessions[session_id].faults)})

    async def _add_reference(self, request: Request) -> JSONResponse:
        doc = json.loads(await request.body() or b"{}")
        reference = doc.get("reference_id")
        if not isinstance(reference, str) or not wire.REFERENCE.fullmatch(reference):
            return JSONResponse({"error": "reference_id"}, status_code=400)
        self.add_reference(reference)
        return JSONResponse({"gallery": sorted(self.gallery)})

    def _release(self, reverse: bool = False) -> JSONResponse:
        delivered = self.release(reverse=reverse)
        return JSONResponse({"released": [{"session_id": d.session_id, "status": d.status} for d in delivered]})

    async def _new_key(self, request: Request) -> JSONResponse:
        doc = json.loads(await request.body() or b"{}")
        key_id = doc.get("key_id")
        if not isinstance(key_id, str) or not wire.TOKEN.fullmatch(key_id):
            return JSONResponse({"error": "key_id"}, status_code=400)
        key = self.keys.get(key_id) or self.new_key(key_id)
        if doc.get("use"):
            self.use_key(key_id)
        return JSONResponse({"key_id": key_id, "public_pem": key.public_pem().decode(), "signing": self.signing_key_id})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18130)
    parser.add_argument("--app-id", default="sscard-demo")
    parser.add_argument("--client-key", metavar="PEM", help="our API public key (default: a generated pair, printed)")
    parser.add_argument("--client-key-id", default="sscard-1")
    parser.add_argument("--public-url", help="where phones reach this sandbox (default: http://HOST:PORT)")
    parser.add_argument("--reference", action="append", default=[], help="a reference photo id in the gallery")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m authsvc.liveness.sandbox", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    described: dict[str, Any] = {}
    if args.client_key:
        with open(args.client_key, "rb") as f:
            keys = wire.KeyRing.of((args.client_key_id, f.read()))
    else:
        ours = wire.SigningKey.generate(args.client_key_id)
        keys = wire.KeyRing.of((ours.key_id, ours.private_key.public_key()))
        described["client_key_id"] = ours.key_id
        described["client_private_pem"] = ours.private_pem().decode()  # test tooling: the service's side of the pair
    public_url = args.public_url or f"http://{args.host}:{args.port}"
    sandbox = LivenessSandbox(args.app_id, keys, public_url=public_url)
    for reference in args.reference:
        sandbox.add_reference(reference)
    # One line of JSON first, so that a script (or a test) can read it before the server answers.
    json.dump({**sandbox.describe(), **described, "base_url": public_url}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    import uvicorn

    uvicorn.run(sandbox.app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
