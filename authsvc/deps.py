"""Typed FastAPI dependencies: the runtime, and a session whose commit is the request's one commit point."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from authsvc.database import unit_of_work
from authsvc.problems import Problem
from authsvc.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    # async: a plain attribute read is not worth a trip through the thread pool.
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with unit_of_work(runtime.sessions) as session:
        yield session


# scope="function": the commit happens before the response is sent, so a failed commit is a 500, never a
# success the database does not hold.
DbSession = Annotated[Session, Depends(get_session, scope="function")]


MAX_BODY = 16 * 1024  # the largest valid request (a completion with a certificate) is under 8 KiB


async def get_body(request: Request) -> bytes:
    """The body, read only up to MAX_BODY: an unauthenticated caller cannot make a worker buffer more."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise Problem(413, "body_too_large", f"request bodies are limited to {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Problem(413, "body_too_large", f"request bodies are limited to {MAX_BODY} bytes")
    return bytes(body)


RawBody = Annotated[bytes, Depends(get_body)]
