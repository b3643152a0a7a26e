"""RFC 9457 problem details for every refusal outside the OAuth endpoints."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("sscard.http")


class Problem(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.title = title or reason.replace("_", " ")
        self.headers = headers or {}
        self.extra = extra


def response(problem: Problem) -> JSONResponse:
    body = {
        "type": f"urn:sscard:problem:{problem.reason}",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "reason": problem.reason,
        **problem.extra,
    }
    return JSONResponse(
        body,
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", **problem.headers},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_request: Request, exc: Problem) -> JSONResponse:
        return response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()[:5])
        return response(Problem(400, "invalid_request", where or "malformed request"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return response(Problem(exc.status_code, reason, str(exc.detail)))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return response(Problem(500, "internal_error", "the service failed; the error was logged"))
