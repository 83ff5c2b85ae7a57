"""`make serve`: the distilled cascade as an HTTP service (distill/serving/app.py) until Ctrl-C.

make serve ARGS="serve.student=bi_encoder_kl serve.sla_ms=100 serve.port=8000"
curl 'http://127.0.0.1:8000/search?q=solar+energy&k=10'
"""

from __future__ import annotations

import os
import socket
from typing import Any

from omegaconf import DictConfig

from distill.errors import ConfigError
from distill.serving.app import create_app
from distill.serving.schema import LOOPBACK, TOKEN_ENV
from distill.serving.service import CascadeService


def check_port(host: str, port: int) -> None:
    """Fail with one line before loading anything when the port is taken or the host is not this machine's."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(
            f"serve.host={host} serve.port={port}: cannot listen there ({e.strerror}); choose another serve.port"
        ) from e


def serve_token(sc: Any) -> str | None:
    """The token clients must send: serve.token, else DISTILL_SERVE_TOKEN; refused when listening remotely
    without one."""
    token = sc.token or os.environ.get(TOKEN_ENV) or None
    if sc.allow_remote and sc.host not in LOOPBACK and not token:
        raise ConfigError(
            f"serve.host={sc.host} with serve.allow_remote=true needs a token: set serve.token=... or "
            f"{TOKEN_ENV}; clients then send Authorization: Bearer TOKEN"
        )
    return token


def serve(
    service: CascadeService, host: str, port: int, quiet: bool = False, token: str | None = None
) -> None:
    import uvicorn

    if not quiet:
        d = service.describe()
        print(
            f"serving {d['student']} -> teacher {d['teacher']} ({d['policy']}"
            f"{', SLA ' + str(d['sla_ms']) + ' ms' if d['policy'] == 'dynamic' else ', k=' + str(d['static_k'])})"
            f" on http://{host}:{port}/search?q=...&k=10   (Ctrl-C stops it)",
            flush=True,
        )
    uvicorn.run(create_app(service, token), host=host, port=port, log_level="warning", access_log=False)


def run(cfg: DictConfig) -> Any:
    sc = cfg.serve
    token = serve_token(sc)
    check_port(str(sc.host), int(sc.port))
    service = CascadeService(cfg)
    try:
        serve(service, str(sc.host), int(sc.port), token=token)
    finally:
        service.close()


__all__ = ["run", "serve", "check_port"]
