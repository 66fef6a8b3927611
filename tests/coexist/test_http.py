"""The service's HTTP endpoint under hostile clients: half-open connections, early disconnects, junk."""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from coexist.service.metrics import HttpServer, Metrics


@pytest.fixture()
def server() -> HttpServer:
    http = HttpServer("127.0.0.1", 0, Metrics(), lambda: (True, {"status": "ok"}), timeout=2.0, max_connections=64)
    http.start()
    yield http
    http.stop()


def healthz(port: int) -> tuple[int, dict[str, str]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return response.status, json.loads(response.read())


def test_two_thousand_half_open_connections_keep_threads_bounded_and_health_answering(server: HttpServer) -> None:
    threads_before = threading.active_count()
    idle = []
    try:
        for _ in range(2000):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        assert threading.active_count() <= threads_before + 1
        # While every one of them is still open, /healthz answers (the oldest waiting ones make room).
        assert healthz(server.port) == (200, {"status": "ok"})
        assert len(server.waiting) <= server.max_connections
    finally:
        for sock in idle:
            sock.close()
    assert healthz(server.port)[0] == 200
    assert threading.active_count() <= threads_before + 1


def test_slow_and_broken_clients_are_closed_quietly(server: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # never finishes its head: closed after the 2 s timeout
    assert slow.recv(100) == b""
    broken = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    broken.sendall(b"GET /metr")
    broken.close()
    junk = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    junk.sendall(b"\x00\xff garbage\r\n\r\n")
    assert junk.recv(100).startswith(b"HTTP/1.1 405")
    junk.close()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
        assert response.status == 200
    assert healthz(server.port)[0] == 200
    assert "Traceback" not in caplog.text and all(r.levelno < logging.WARNING for r in caplog.records)


def test_actions_need_their_header_and_answer_json(tmp_path: Path) -> None:
    """A re-snapshot request through HTTP lands as a request file the running capture serves."""
    from cdc import requests

    warehouse = tmp_path / "warehouse.duckdb"

    def resnapshot(method: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str]]:
        if method != "POST" or not query.get("table"):
            return 400, {"error": "POST with a table"}
        request = requests.submit(warehouse, query["source"][0], query["table"])
        return 202, {"id": request.id}

    http = HttpServer("127.0.0.1", 0, Metrics(), lambda: (True, {}), actions={"/cdc/resnapshot": resnapshot})
    http.start()
    try:
        url = f"http://127.0.0.1:{http.port}/cdc/resnapshot?source=erp&table=customers"
        with pytest.raises(urllib.error.HTTPError) as refused:  # a web page cannot add the header cross-site
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5)
        assert refused.value.code == 403
        asked = urllib.request.Request(url, method="POST", headers={"X-Coexist-Action": "resnapshot"})
        with urllib.request.urlopen(asked, timeout=5) as response:
            assert response.status == 202
            request_id = json.loads(response.read())["id"]
        (pending,) = requests.pending(warehouse, "erp")
        assert pending.id == request_id and pending.tables == ["customers"]
        assert requests.status(warehouse, "../../etc/passwd") is None
    finally:
        http.stop()
