"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authsvc import problems
from authsvc.clients.admin import router as admin_clients_router
from authsvc.config import Settings
from authsvc.deps import RuntimeDep
from authsvc.ecard.endpoints import router as ecard_router
from authsvc.kiosk.endpoints import router as kiosk_router
from authsvc.liveness.endpoints import router as liveness_router
from authsvc.login.endpoints import router as login_router
from authsvc.oauth.endpoints import router as oauth_router
from authsvc.oidc.authorize import router as authorize_router
from authsvc.oidc.discovery import router as oidc_router
from authsvc.oidc.logout import router as logout_router
from authsvc.oidc.userinfo import router as userinfo_router
from authsvc.runtime import Runtime
from payments.api.orders import router as payments_orders_router
from payments.callbacks.endpoints import router as payments_callbacks_router
from payments.channels.setup import install_channels
from payments.refunds.endpoints import router as payments_refunds_router


class ServerTiming:
    """Adds `Server-Timing: app;dur=<ms>, cpu;dur=<ms>` (W3C Server Timing): the request's wall time in the service,
    commit included, and the worker process's CPU time meanwhile (the request's own CPU cost when requests do not
    overlap). The benchmark reads both."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, cpu = time.perf_counter(), time.process_time()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                used = (time.process_time() - cpu) * 1000
                MutableHeaders(scope=message).append("Server-Timing", f"app;dur={elapsed:.3f}, cpu;dur={used:.3f}")
            await send(message)

        await self.app(scope, receive, timed)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Every worker runs the back-channel logout delivery loop; they share the outbox (authsvc/oidc/backchannel.py).
    With SSCARD_PAYMENT_SWEEP_INTERVAL set, every worker also runs the payments recovery sweep (payments/recovery/)."""
    from authsvc.oidc.backchannel import delivery_loop
    from payments.channels.registry import current
    from payments.recovery.loop import sweep_loop

    stop = asyncio.Event()
    tasks = [asyncio.create_task(delivery_loop(app.state.runtime, stop))]
    if app.state.runtime.settings.payment_sweep_interval:
        tasks.append(asyncio.create_task(sweep_loop(app.state.runtime, lambda: current(app), stop)))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    if runtime is None:
        assert settings is not None
        runtime = Runtime(settings)
    app = FastAPI(
        title="sscard authentication service", version="0.1.0", docs_url=None, redoc_url=None, lifespan=_lifespan
    )
    app.state.runtime = runtime
    problems.install(app)
    app.add_middleware(ServerTiming)
    for router in (
        oidc_router,
        authorize_router,
        oauth_router,
        userinfo_router,
        logout_router,
        login_router,
        admin_clients_router,
        kiosk_router,
        liveness_router,
        ecard_router,
        payments_orders_router,
        payments_callbacks_router,
        payments_refunds_router,
    ):
        app.include_router(router)
    # The payment channels the operator enabled, built with their keys from keys/ (payments/channels/setup.py).
    install_channels(app, runtime)

    @app.get("/healthz", tags=["ops"])
    def health(rt: RuntimeDep) -> JSONResponse:
        checks = {"store": rt.store.ping()}
        try:
            with rt.engine.connect() as conn:
                conn.execute(text("select 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
        ok = all(checks.values())
        return JSONResponse({"status": "ok" if ok else "degraded", **checks}, status_code=200 if ok else 503)

    return app


def app_from_env() -> FastAPI:
    """Entry point for `uvicorn --factory authsvc.app:app_from_env` (one per worker)."""
    from authsvc.config import load_settings

    return create_app(load_settings())
