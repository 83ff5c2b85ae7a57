"""`make dashboard`: a local dashboard of a workspace's tracked runs, on 127.0.0.1, until Ctrl-C.

`dashboard.backend=auto` (default) serves TensorBoard when the workspace has `tensorboard/` event files (the
default logger writes them, so `make demo` then `make dashboard` shows the demo's runs with no account), else
MLflow's UI when it has `mlflow.db`. `dashboard.dir=FOLDER` serves another folder (e.g. `outputs/` for every
workspace at once). The server is the backend's own (`tensorboard`, `mlflow ui`), started as a child process and
stopped with it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from distill.config import check, validate
from distill.errors import ConfigError, StageNotReadyError


@dataclass
class DashboardConfig:
    """`make dashboard` (distill/dashboard.py)."""

    # auto: TensorBoard when the workspace has tensorboard/ event files, else MLflow's UI on its mlflow.db
    backend: str = "auto"
    # another folder to serve (null: the workspace), e.g. outputs/ for every workspace at once
    dir: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None  # null: a free port

    def __post_init__(self) -> None:
        check(
            self.backend in ("auto", "tensorboard", "mlflow"),
            "dashboard.backend",
            self.backend,
            "use auto, tensorboard or mlflow",
        )
        check(
            self.port is None or 0 < self.port < 65536,
            "dashboard.port",
            self.port,
            "must be a TCP port or null",
        )


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pick(backend: str, folder: Path) -> tuple[str, Path]:
    """The backend to serve and what it reads: TensorBoard's log folder or MLflow's SQLite store."""
    tb, db = folder / "tensorboard", folder / "mlflow.db"
    if backend in ("auto", "tensorboard") and (tb.is_dir() or (backend == "tensorboard" and folder.is_dir())):
        return "tensorboard", tb if tb.is_dir() else folder
    if backend in ("auto", "mlflow") and db.is_file():
        return "mlflow", db
    raise StageNotReadyError(
        f"{folder}: no {'tracked runs' if backend == 'auto' else backend + ' runs'} to show (looked for "
        f"{tb} and {db}); run a stage with logger=[wandb,tensorboard] (the default) or logger=mlflow first"
    )


def command(backend: str, source: Path, host: str, port: int) -> list[str]:
    if backend == "tensorboard":
        return [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(source),
            "--host",
            host,
            "--port",
            str(port),
        ]
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", f"sqlite:///{source.resolve()}",
        "--host", host, "--port", str(port),
    ]  # fmt: skip


def serve(
    backend: str, folder: Path, host: str = "127.0.0.1", port: int | None = None
) -> tuple[Any, str, str]:
    """Start the dashboard server as a child process; returns (process, backend, URL)."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"dashboard.host={host!r}: the dashboard only listens on loopback (127.0.0.1)")
    name, source = pick(backend, folder)
    if port and not port_free(host, port):
        raise ConfigError(
            f"dashboard.port={port}: another program listens on {host}:{port}; choose another port"
        )
    port = port or free_port(host)
    proc = subprocess.Popen(
        command(name, source, host, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return proc, name, f"http://{host}:{port}/"


def wait_until_up(
    url: str, proc: Any, seconds: float = 60.0, ours: Callable[[bytes], bool] | None = None
) -> bool:
    """Poll `url` until `proc` answers it (True), or the process ends or the time runs out (False). An answer
    counts only while `proc` is alive and `ours(body)` accepts it (default: `proc` or a process it started
    listens on the URL's port): another server on the port is never taken for ours. `proc`: a `subprocess.Popen`
    or a `multiprocessing.Process`."""
    import urllib.parse
    import urllib.request

    alive = proc.is_alive if hasattr(proc, "is_alive") else (lambda: proc.poll() is None)
    port = urllib.parse.urlsplit(url).port
    check = ours or (lambda body: port is not None and listens(proc.pid, port))
    end = time.monotonic() + seconds
    while time.monotonic() < end and alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = r.read()
            if alive() and check(body):
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` or one it started listens on TCP `port`."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in conns):
            return True
    return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run(cfg: DictConfig) -> None:
    dc = cfg.dashboard
    validate(cfg)
    folder = Path(dc.dir or cfg.paths.workspace).resolve()
    if not folder.is_dir():  # a dashboard reads runs; it never creates the folder it was asked to show
        raise StageNotReadyError(
            f"{folder} does not exist: run a stage there first, or point "
            f"{'dashboard.dir' if dc.dir else 'paths.workspace'} at a workspace"
        )
    proc, name, url = serve(str(dc.backend), folder, str(dc.host), dc.port)
    try:
        if not wait_until_up(url, proc):
            err = (
                proc.stderr.read().decode(errors="replace").strip().splitlines()
                if proc.poll() is not None
                else []
            )
            raise StageNotReadyError(f"the {name} dashboard did not start: {err[-1] if err else 'no answer'}")
        print(f"dashboard ({name}) for {folder}: {url}   (Ctrl-C stops it)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        print("dashboard: stopping", flush=True)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
