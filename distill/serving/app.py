"""The HTTP face of the cascade (FastAPI): GET /search, /health, /metrics, /info.

`GET /search?q=TEXT&k=10` answers `{"results": [{"docid", "score"}, ...], "n": candidates the student ranked,
"teacher_k": depth the teacher reranked (0 = shed), "timings_ms": {queue, retrieval, student, teacher, total}}`.
The top `teacher_k` results carry the teacher's scores, the rest the student's. Bad requests (empty query, one
longer than `serve.max_query_chars`, k outside 1..`serve.max_k`, unknown parameters) get a 422 with a message.
Searches run on the service's worker threads behind one FIFO queue; the event loop only queues and answers.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from distill.serving.service import CascadeService, RequestError

PARAMS = {"q", "k"}
log = logging.getLogger(__name__)


def create_app(service: CascadeService) -> FastAPI:
    app = FastAPI(title="distill cascade", docs_url=None, redoc_url=None)
    sc = service.sc

    def reject(msg: str) -> JSONResponse:
        service.metrics.requests.labels(code="422").inc()
        return JSONResponse({"detail": msg}, status_code=422)

    @app.get("/search")
    async def search(request: Request) -> Any:
        params = request.query_params
        unknown = sorted(set(params) - PARAMS)
        if unknown:
            return reject(
                f"unknown parameter(s) {unknown}: /search takes q (the query) and k (results, 1-{sc.max_k})"
            )
        q = params.get("q", "").strip()
        if not q:
            return reject("q is empty: give the query text, e.g. /search?q=solar+energy&k=10")
        if len(q) > sc.max_query_chars:
            return reject(
                f"q has {len(q)} characters; the limit is serve.max_query_chars={sc.max_query_chars}"
            )
        try:
            k = int(params.get("k", "10"))
        except ValueError:
            return reject(f"k={params.get('k')!r} is not a whole number: give 1-{sc.max_k}")
        if not 1 <= k <= sc.max_k:
            return reject(f"k={k} is out of range: give 1-{sc.max_k} (serve.max_k)")
        enqueued = service.enqueue()
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                service.pool, service.search, q, k, enqueued
            )
        except RequestError as e:
            return reject(str(e))
        except Exception as e:
            log.exception("search failed: q=%r k=%d", q, k)
            service.metrics.requests.labels(code="500").inc()
            raise HTTPException(status_code=500, detail=f"{type(e).__name__}: {e}") from e
        service.metrics.requests.labels(code="200").inc()
        return out

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The loaded models, the policy and the current cost estimates (what the load test reads)."""
        return service.describe() | {
            "depth": service.controller.k,
            "depth_changes": service.controller.changes,
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["create_app"]
