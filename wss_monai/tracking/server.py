"""A tracking server: whether one answers, and starting a local ``mlflow server`` (:func:`start_local_server`)."""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wss_monai.tracking.log import first_line
from wss_monai.tracking.store import DEFAULT_ARTIFACTS_DIR, resolve_tracking_uri, sqlite_path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# local requests must not go through an HTTP proxy set in the environment
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _health_timeout() -> float:
    try:
        return min(10.0, float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")))
    except ValueError:
        return 10.0


def reachable(tracking_uri: str, timeout: float | None = None) -> tuple[bool, str]:
    """Whether the tracking server at ``tracking_uri`` answers at all: ``(True, "")`` or ``(False, reason)``.

    One GET of ``<uri>/health``; any HTTP answer (even 401 or 404) counts as reachable, only a
    refused or timed-out connection does not. A refused connection is known at once, where
    MLflow's own client would retry for minutes. Database URIs are reported reachable (their
    errors show when they are used).
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return True, ""
    host = urllib.parse.urlsplit(tracking_uri).hostname or ""
    opener = _NO_PROXY_OPENER if _is_loopback(host) else urllib.request.build_opener()
    try:
        with opener.open(f"{tracking_uri}/health", timeout=_health_timeout() if timeout is None else timeout):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""
    except (urllib.error.URLError, OSError) as err:
        return False, first_line(getattr(err, "reason", err))


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with _NO_PROXY_OPENER.open(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process remains in process group ``pgid``."""
    proc = Path("/proc")
    if proc.is_dir():
        # /proc rather than killpg(pgid, 0): an orphaned worker that exited stays a zombie
        # until init reaps it (never, in some containers) and killpg still "finds" it
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LocalServer:
    """Handle of an ``mlflow server`` started by :func:`start_local_server`.

    The server runs in its own process group (whose id is ``pid``), so :meth:`stop` reaches the
    uvicorn worker it spawns as well, and only processes this handle started.
    """

    url: str
    pid: int
    host: str
    port: int
    backend_store_uri: str
    artifacts_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def api(self, path: str, payload: Mapping[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """Call the server's REST API: ``api("/api/2.0/mlflow/runs/get?run_id=...")`` (GET), or POST ``payload``.

        Goes straight to the server, never through a proxy from the environment (it is local).
        """
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``timeout`` seconds.

        Returns once the server process has exited and been reaped. Safe to call twice.
        """
        atexit.unregister(self.stop)
        pgid = self.pid  # start_new_session=True made the server its own group leader
        if self.process.poll() is None or _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and (self.process.poll() is None or _group_alive(pgid)):
                time.sleep(0.1)
            if _group_alive(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_local_server(
    port: int | None = None,
    host: str = "127.0.0.1",
    backend_store_uri: str | None = None,
    artifacts_dir: str | os.PathLike | None = None,
    timeout: float = 90.0,
    workers: int = 1,
    log_path: str | os.PathLike | None = None,
) -> LocalServer:
    """Start ``mlflow server`` as a subprocess and wait until it answers.

    Args:
        port: TCP port; None = a free one.
        host: interface to bind; 127.0.0.1 (this machine only) by default. Anything else
            exposes the UI and REST API to the network and is warned about.
        backend_store_uri: where runs are stored (see :func:`resolve_tracking_uri`); None = the
            SQLite file in the working folder.
        artifacts_dir: where the server keeps artifacts it receives; None = ``mlartifacts``
            beside the SQLite file (or in the cwd).
        timeout: seconds to wait for ``/health`` to answer before giving up (the server is
            then stopped and ``TimeoutError`` raised).
        workers: uvicorn worker processes (MLflow's default is 4; 1 suits a laptop or tests).
        log_path: file for the server's output; None = a temporary file.

    Returns:
        a :class:`LocalServer` with ``.url``, ``.pid`` and ``.stop()``; it is also a context
        manager, and is stopped at interpreter exit if still running.

    Example::

        with start_local_server(backend_store_uri="sqlite:////tmp/x/mlruns.db") as server:
            print(server.url)   # http://127.0.0.1:<port>
    """
    backend = resolve_tracking_uri(backend_store_uri)
    if backend.startswith(("http://", "https://")):
        raise ValueError(f"backend_store_uri must be a database, not a server URL: {backend!r}.")
    db = sqlite_path(backend)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if artifacts_dir is None:
        artifacts_dir = (db.parent if db is not None else Path.cwd()) / DEFAULT_ARTIFACTS_DIR
    artifacts_dir = Path(artifacts_dir).resolve()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    if not _is_loopback(host):
        warnings.warn(
            f"binding the MLflow server to {host!r} exposes it beyond this machine; 127.0.0.1 keeps it local.",
            stacklevel=2,
        )
    if port is None:
        port = _free_port(host)
    elif not _port_is_free(host, port):
        raise OSError(f"port {port} on {host} is already in use; choose another or pass port=None.")
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="mlflow-server-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)

    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts_dir),
    ]  # fmt: skip
    env = dict(os.environ)
    # MLflow 3 also starts a job runner for GenAI jobs: not needed to track runs, and heavy
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(artifacts_dir.parent),
            start_new_session=True,  # its own process group, stoppable as a whole
        )
    url_host = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    server = LocalServer(
        url=f"http://{url_host}:{port}",
        pid=process.pid,
        host=host,
        port=port,
        backend_store_uri=backend,
        artifacts_dir=artifacts_dir,
        log_path=log_path,
        process=process,
    )
    atexit.register(server.stop)

    deadline = time.monotonic() + timeout
    while not _answers(server.url):
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(
                f"mlflow server exited with code {process.returncode} before answering; "
                f"its log ({log_path}) ends with:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(
                f"mlflow server did not answer {server.url}/health within {timeout:g} s; "
                f"its log ({log_path}) ends with:\n{_tail(log_path)}"
            )
        time.sleep(0.25)
    return server
