"""Fixtures for the monitoring tests: PNG payloads, a saved tiny detector, live uvicorn servers, database URLs."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.images import png_bytes

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

PG_ENV = "DISCOPATCH_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def id_pngs(fmnist) -> list[bytes]:
    """Held-out Fashion-MNIST test images (in-distribution for the tiny detector)."""
    return [png_bytes(a) for a in fmnist.test_images[:120]]


@pytest.fixture(scope="session")
def blank_png() -> bytes:
    """A shifted input: all blank frames get one and the same score, which the KS test cannot miss."""
    return png_bytes(np.zeros((28, 28), np.uint8))


@pytest.fixture(scope="session")
def model_dir(trained_detector, tmp_path_factory) -> Path:
    return trained_detector.save(tmp_path_factory.mktemp("monitor-model") / "model")


@pytest.fixture(scope="session")
def png():
    """Encode a uint8 array as PNG bytes."""
    return png_bytes


@pytest.fixture(scope="session")
def free_port():
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    return _free_port


@pytest.fixture(scope="session")
def live_server():
    """``with live_server(app) as url:`` runs the app on uvicorn (127.0.0.1, free port) in a thread."""
    return _live_server


@contextmanager
def _live_server(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn on 127.0.0.1 and a free port in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def db_params() -> list[Any]:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"{PG_ENV} is not set"),
        ),
    ]


@pytest.fixture(params=db_params())
def db_url(request, tmp_path) -> str:
    """A SQLite file per test, or the PostgreSQL server named by DISCOPATCH_TEST_POSTGRES_URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitor.db'}"
    return os.environ[PG_ENV]


@pytest.fixture
def stream_name() -> str:
    """Unique per test, so tests can share one PostgreSQL database."""
    return f"s-{uuid.uuid4().hex[:12]}"
