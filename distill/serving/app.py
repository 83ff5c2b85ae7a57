"""The HTTP face of the cascade (FastAPI): GET /search, /health, /metrics, /info.

`GET /search?q=TEXT&k=10` answers `{"results": [{"docid", "rank", "score", "scored_by"}, ...], "n": candidates
the student ranked, "teacher_k": depth the teacher reranked (0 = shed), "timings_ms": {queue, retrieval, student,
teacher, total}}`. `rank` orders the answer; `score` is on the scale of the model named by `scored_by` (the
teacher for the head it reranked, the student for the rest), so scores of the two parts do not compare. Bad
requests (empty query, one longer than `serve.max_query_chars`, k not a whole number in 1..`serve.max_k`, unknown
parameters) get a 422 with a message. With a token (`serve.token` or DISTILL_SERVE_TOKEN; required when
`serve.allow_remote=true`) every endpoint but /health needs `Authorization: Bearer TOKEN` (else 401). Searches run
on the service's worker threads behind one FIFO queue; the event loop only queues and answers.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from distill.serving.service import CascadeService, RequestError

PARAMS = {"q", "k"}
log = logging.getLogger(__name__)


def create_app(service: CascadeService, token: str | None = None) -> FastAPI:
    app = FastAPI(title="distill cascade", docs_url=None, redoc_url=None)
    sc = service.sc

    if token:

        @app.middleware("http")
        async def require_token(request: Request, call_next: Any) -> Any:
            if request.url.path != "/health":
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return JSONResponse(
                        {"detail": "send Authorization: Bearer <serve.token>"}, status_code=401
                    )
            return await call_next(request)

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
        raw_k = params.get("k", "10")
        if not re.fullmatch(r"[0-9]{1,6}", raw_k):  # int() would also take '1_0', ' 3' and other digits
            return reject(f"k={raw_k!r} is not a whole number: give 1-{sc.max_k}")
        k = int(raw_k)
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
    async def health() -> dict[str, Any]:
        # the process id lets whoever started this server tell its answer from another server's on the port
        return {"status": "ok", "pid": os.getpid()}

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
