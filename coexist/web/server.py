"""Serve the workbench with uvicorn in a thread of this process (beside capture and the jobs, or alone)."""

from __future__ import annotations

import threading
import time

import uvicorn
from starlette.applications import Starlette

from coexist.config import WebSettings
from core.errors import TerminalError


class WebServer:
    def __init__(self, app: Starlette, settings: WebSettings) -> None:
        self.settings = settings
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
            ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="coexist-web", daemon=True)
        self.port = settings.port

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls else "http"
        host = f"[{self.settings.host}]" if ":" in self.settings.host else self.settings.host
        return f"{scheme}://{host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise TerminalError(
                    f"the workbench could not listen on {self.settings.host}:{self.settings.port} "
                    "(port in use? set web.port, or 0 for a free one)"
                )
            time.sleep(0.05)
        sockets = [s for server in self.server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
