"""Serve a simulator on a real loopback port (plain HTTP or HTTPS) from a background thread."""

from __future__ import annotations

import os
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from batcher.simulator.app import GraphSimulator


class RunningSimulator:
    """Serve a simulator on a loopback port from a background thread, as a context manager.

    The socket is bound and listening before the thread starts, so clients can connect at
    once: the kernel queues their connections until the server accepts them. ``simulator`` may
    be replaced while it serves (a test suite reuses one server for many fresh tenants).
    """

    def __init__(
        self,
        simulator: GraphSimulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_certfile: str | os.PathLike[str] | None = None,
        ssl_keyfile: str | os.PathLike[str] | None = None,
    ) -> None:
        """Serve plain HTTP, or HTTPS with a PEM certificate (chain) and key, e.g. from trustme."""
        self.simulator = simulator
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(128)
        self.port = self._socket.getsockname()[1]
        self.url = f"{'https' if ssl_certfile else 'http'}://{host}:{self.port}"
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=1,
            ssl_certfile=None if ssl_certfile is None else os.fspath(ssl_certfile),
            ssl_keyfile=None if ssl_keyfile is None else os.fspath(ssl_keyfile),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.simulator.app(scope, receive, send)

    def serve_forever(self) -> None:
        """Serve in the calling thread until Ctrl-C."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()

    def __enter__(self) -> RunningSimulator:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
