"""Which login methods a pending login offers now: what the assurance policy says is still missing, of the methods
this deployment has (a face check only with a liveness vendor configured)."""

from __future__ import annotations

from typing import Any

from authsvc.login import pending
from authsvc.runtime import Runtime
from authsvc.tokens import assurance


def _face():  # type: ignore[no-untyped-def]  # TEMPORARY until authsvc/login/face.py lands (liveness helper)
    try:
        from authsvc.login import face
    except ImportError:
        return None
    return face


def available(runtime: Runtime) -> frozenset[str]:
    names = {assurance.METHOD_CARD, assurance.METHOD_ECARD}
    face = _face()
    if face is not None and face.available(runtime):
        names.add(assurance.METHOD_FACE)
    return frozenset(names)


def offered(runtime: Runtime, missing: list[str]) -> list[str]:
    have = available(runtime)
    return [m for m in missing if m in have]


def status(runtime: Runtime, login: pending.PendingLogin) -> dict[str, Any]:
    """The page's view of the login: done, or what was reached, the methods to offer now, the last refusal and the
    face check's state (waiting, failed, timed out)."""
    answer = pending.status(runtime.store, login)
    if answer["status"] == "done":
        return answer
    answer["missing"] = offered(runtime, answer["missing"])
    face = _face()
    state = face.state(runtime, login) if face is not None else None
    if state is not None:
        answer["face"] = state
    return answer
