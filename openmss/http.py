"""The HTTP port: health and metrics for operators; the webmail and the directory API mount here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse

from openmss.metrics import Metrics


def create_app(
    *,
    metrics: Metrics,
    health: Callable[[], Awaitable[dict[str, str]]],
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    app = FastAPI(title="OpenMSS", version="0.1.0", docs_url="/api/docs", openapi_url="/api/openapi.json")
    for router in routers:
        app.include_router(router)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> Response:
        checks = await health()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", tags=["operations"])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
