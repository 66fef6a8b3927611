"""Requests to a running capture, as files beside the warehouse (the capture holds its one write lock).

`cdc resnapshot` (and the service's HTTP endpoint) drop a request; the capture takes it between
batches, re-snapshots the tables into staging while its readers keep streaming, swaps them in
when complete, and writes the outcome next to the request for whoever asked.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(slots=True)
class ResnapshotRequest:
    source: str
    tables: list[str]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    rows: int = 0
    dead_letters: int = 0
    done: bool = False
    error: str | None = None


def folder(warehouse_path: Path) -> Path:
    return warehouse_path.with_name(warehouse_path.stem + ".requests")


def submit(warehouse_path: Path, source: str, tables: list[str]) -> ResnapshotRequest:
    request = ResnapshotRequest(source, tables)
    _write(folder(warehouse_path) / f"{request.id}.json", request)
    return request


def pending(warehouse_path: Path, source: str) -> list[ResnapshotRequest]:
    """Requests for `source` not yet done, oldest first."""
    found = []
    for path in sorted(folder(warehouse_path).glob("*.json"), key=lambda p: p.stat().st_mtime):
        try:
            request = ResnapshotRequest(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if request.source == source and not request.done:
            found.append(request)
    return found


def finish(warehouse_path: Path, request: ResnapshotRequest) -> None:
    request.done = True
    _write(folder(warehouse_path) / f"{request.id}.json", request)


def status(warehouse_path: Path, request_id: str) -> ResnapshotRequest | None:
    if not re.fullmatch(r"[0-9a-f]{12}", request_id):  # an id, never a path
        return None
    path = folder(warehouse_path) / f"{request_id}.json"
    try:
        return ResnapshotRequest(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def wait(warehouse_path: Path, request: ResnapshotRequest, timeout: float) -> ResnapshotRequest | None:
    """The finished request, or None when the capture has not done it within `timeout` seconds."""
    path = folder(warehouse_path) / f"{request.id}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            current = ResnapshotRequest(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            current = None
        if current is not None and current.done:
            path.unlink(missing_ok=True)
            return current
        time.sleep(0.2)
    return None


def _write(path: Path, request: ResnapshotRequest) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(request)))
    os.replace(tmp, path)
