"""Kill ``discopatch serve`` with SIGKILL mid-traffic and restart it: nothing acknowledged is lost, state resumes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from discopatch.monitoring.drift import DriftConfig, DriftMonitor

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _start(model_dir: Path, db: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "discopatch", "serve", str(model_dir), "--db", f"sqlite:///{db}",
           "--port", str(port), "--device", "cpu", "--threads", "1", "--window", "40", "--min-window", "10",
           "--ert", "500", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"serve did not become healthy:\n{log.read_text()[-3000:]}")


def _db_rows(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT seq, source_id FROM dp_images ORDER BY seq").fetchall()


def test_sigkill_loses_nothing_acknowledged(
    model_dir, trained_detector, tmp_path, id_pngs, blank_png, free_port
) -> None:
    db, log, port = tmp_path / "serve.db", tmp_path / "serve.log", free_port()
    url = f"http://127.0.0.1:{port}/v1/streams/plant/images"
    proc = _start(model_dir, db, port, log)
    acked: list[str] = []
    try:
        with httpx.Client(timeout=60) as client:
            for k in range(8):
                payload = id_pngs[k * 3 : k * 3 + 3] if k < 5 else [blank_png] * 3
                files = [("images", (f"r{k}-{j}.png", b, "image/png")) for j, b in enumerate(payload)]
                r = client.post(url, files=files)
                assert r.status_code == 200, r.text
                acked += [x["source_id"] for x in r.json()["results"]]
            before = client.get(f"http://127.0.0.1:{port}/v1/streams/plant/status").json()

        # Keep posting from a second thread and kill the server while requests are in flight.
        stop = threading.Event()

        def flood() -> None:
            with httpx.Client(timeout=10) as client:
                k = 100
                while not stop.is_set():
                    files = [("images", (f"f{k}-{j}.png", id_pngs[(k + j) % 50], "image/png")) for j in range(2)]
                    try:
                        r = client.post(url, files=files)
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        acked.extend(x["source_id"] for x in r.json()["results"])
                    k += 1

        t = threading.Thread(target=flood)
        t.start()
        n0 = len(acked)
        deadline = time.monotonic() + 60
        while len(acked) < n0 + 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    rows = _db_rows(db)
    recorded = [sid for _, sid in rows]
    assert set(acked) <= set(recorded), "an acknowledged image is missing after SIGKILL"
    assert len(recorded) == len(set(recorded))
    assert [seq for seq, _ in rows] == list(range(1, len(rows) + 1))

    proc = _start(model_dir, db, port, log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            after = client.get("/v1/streams/plant/status").json()
            assert after["n_recorded"] == after["time"] == len(rows)
            assert after["time"] > before["time"]
            # The resumed state equals a replay of every recorded score through a fresh monitor.
            replay = DriftMonitor(trained_detector.calibration, DriftConfig(window_size=40, min_window=10, ert=500))
            with sqlite3.connect(db) as conn:
                sql = "SELECT time, score FROM dp_images WHERE score IS NOT NULL ORDER BY seq"
                scored = conn.execute(sql).fetchall()
            replay.update([sc for _, sc in scored], [tm for tm, _ in scored])
            expected = replay.result()
            for key in ("n_window", "n_flagged", "p_val", "distance", "is_drift", "per_test"):
                assert after[key] == expected[key], key
            r = client.post("/v1/streams/plant/images", files=[("images", ("last.png", id_pngs[60], "image/png"))])
            assert r.status_code == 200 and r.json()["results"][0]["seq"] == len(rows) + 1
            assert r.json()["drift"]["time"] == len(rows) + 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
