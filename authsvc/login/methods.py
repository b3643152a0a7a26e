"""Which login methods a pending login offers now: what the assurance policy says is still missing, of the methods
this deployment has (a face check only with a liveness vendor configured)."""

from __future__ import annotations

from typing import Any

from authsvc.login import face, pending
from authsvc.runtime import Runtime
from authsvc.tokens import assurance


def available(runtime: Runtime) -> frozenset[str]:
    names = {assurance.METHOD_CARD, assurance.METHOD_ECARD}
    if face.available(runtime):
        names.add(assurance.METHOD_FACE)
    return frozenset(names)


def offered(runtime: Runtime, amr: list[str], wanted: str) -> list[str]:
    """The methods to offer a login that has proven `amr` and must reach `wanted`: the first steps of the smallest
    sets of the methods this deployment has that get there (none: the level is out of reach here)."""
    return assurance.missing(amr, wanted, among=available(runtime))


def status(runtime: Runtime, login: pending.PendingLogin) -> dict[str, Any]:
    """The page's view of the login: done, or what was reached, the methods to offer now, the last refusal and the
    face check's state (waiting, failed, timed out)."""
    answer = pending.status(runtime.store, login)
    if answer["status"] == "done":
        return answer
    answer["missing"] = offered(runtime, pending.proven(runtime.store, login), login.request.acr)
    state = face.state(runtime, login)
    if state is not None:
        answer["face"] = state
    return answer
