"""`make serve`: the distilled cascade as an HTTP service (distill/serving/app.py) until Ctrl-C.

make serve ARGS="serve.student=bi_encoder_kl serve.sla_ms=100 serve.port=8000"
curl 'http://127.0.0.1:8000/search?q=solar+energy&k=10'
"""

from __future__ import annotations

import socket
from typing import Any

from omegaconf import DictConfig

from distill.errors import ConfigError
from distill.serving.app import create_app
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


def serve(service: CascadeService, host: str, port: int, quiet: bool = False) -> None:
    import uvicorn

    if not quiet:
        d = service.describe()
        print(
            f"serving {d['student']} -> teacher {d['teacher']} ({d['policy']}"
            f"{', SLA ' + str(d['sla_ms']) + ' ms' if d['policy'] == 'dynamic' else ', k=' + str(d['static_k'])})"
            f" on http://{host}:{port}/search?q=...&k=10   (Ctrl-C stops it)",
            flush=True,
        )
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)


def run(cfg: DictConfig) -> Any:
    sc = cfg.serve
    check_port(str(sc.host), int(sc.port))
    service = CascadeService(cfg)
    try:
        serve(service, str(sc.host), int(sc.port))
    finally:
        service.close()


__all__ = ["run", "serve", "check_port"]
