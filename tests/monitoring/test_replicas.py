"""Two ``discopatch serve`` replicas on one PostgreSQL database, one stream, one of them killed and restarted.

Clients post through both replicas (as a load balancer in front of them would), each request under its own
idempotency key, and retry a failed request (connection refused by the killed replica, 503 on a write conflict) with
the same key on the other replica. Afterwards: every acknowledged image is stored exactly once with dense sequence
numbers, both replicas report the drift state of an offline recompute over the stored scores, a key replays across
replicas, and each alert is stored and sent once. ``DISCOPATCH_TEST_REPLICA_KILLS`` (default 2) sets the number of
kills; docs/SCALING.md records a run with 10.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from discopatch.monitoring.drift import DriftConfig, DriftMonitor

from .conftest import PG_ENV

PG_URL = os.environ.get(PG_ENV)
pytestmark = [
    pytest.mark.skipif(not PG_URL, reason=f"{PG_ENV} is not set"),
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals"),
]
KILLS = int(os.environ.get("DISCOPATCH_TEST_REPLICA_KILLS", "2"))  # each restart costs seconds: CI keeps it small
DRIFT = ["--window", "40", "--min-window", "10", "--ert", "500"]


class Replica:
    """One ``serve`` process on a fixed port; ``start`` again after ``kill`` (same port, same database)."""

    def __init__(self, model_dir: Path, port: int, log: Path, alerts: Path) -> None:
        self.cmd = [sys.executable, "-m", "discopatch", "serve", str(model_dir), "--db", str(PG_URL),
                    "--port", str(port), "--device", "cpu", "--threads", "1", *DRIFT, "--log-level", "warning",
                    "--alerts-jsonl", str(alerts)]  # fmt: skip
        self.url, self.log, self.proc = f"http://127.0.0.1:{port}", log, None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve did not become healthy:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _stored(stream: str) -> tuple[list[tuple[int, str, float | None, float]], list[tuple[int, str]]]:
    """(seq, source id, score, time) of every image and (seq, kind) of every alert of ``stream``, in order."""
    from sqlalchemy import create_engine, text

    url = str(PG_URL).replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            sid = c.execute(text("SELECT id FROM dp_streams WHERE name = :n"), {"n": stream}).scalar_one()
            images = c.execute(
                text("SELECT seq, source_id, score, time FROM dp_images WHERE stream_id = :s ORDER BY seq"), {"s": sid}
            ).all()
            alerts = c.execute(
                text("SELECT seq, kind FROM dp_alerts WHERE stream_id = :s ORDER BY id"), {"s": sid}
            ).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in images], [tuple(r) for r in alerts]


def test_two_replicas_on_postgresql_survive_kills(
    model_dir, trained_detector, tmp_path, id_pngs, blank_png, free_port, stream_name
) -> None:
    replicas = [
        Replica(model_dir, free_port(), tmp_path / f"serve{i}.log", tmp_path / f"alerts{i}.jsonl") for i in range(2)
    ]
    for r in replicas:
        r.start()
    acked: dict[str, list[str]] = {}  # idempotency key -> acknowledged source ids
    answers: dict[str, dict] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    retried: list[str] = []
    n_requests = 16 + 4 * KILLS

    def client(worker: int) -> None:
        with httpx.Client(timeout=60) as http:
            for k in range(n_requests):
                if stop.is_set():
                    return
                key = f"w{worker}-r{k}"
                payload = _payload_of(key, id_pngs, blank_png, n_requests)
                files = [("images", (f"{key}-{j}.png", b, "image/png")) for j, b in enumerate(payload)]
                target = (worker + k) % 2
                deadline = time.monotonic() + 120
                while True:  # the same key until a replica acknowledges it
                    try:
                        r = http.post(f"{replicas[target].url}/v1/streams/{stream_name}/images", files=files,
                                      headers={"Idempotency-Key": key})  # fmt: skip
                        if r.status_code == 200:
                            with lock:
                                acked[key] = [x["source_id"] for x in r.json()["results"]]
                                answers[key] = r.json()
                            break
                        if r.status_code != 503:
                            errors.append(f"{key}: {r.status_code} {r.text[:200]}")
                            return
                    except httpx.TransportError:
                        pass
                    retried.append(key)
                    if time.monotonic() > deadline:
                        errors.append(f"{key}: no replica acknowledged it in 120 s")
                        return
                    target = 1 - target
                    time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(2)]
    try:
        for t in threads:
            t.start()
        for kill in range(KILLS):  # kill replica 0 while requests are in flight, restart it, again
            n0 = len(acked)
            deadline = time.monotonic() + 60
            while len(acked) < n0 + 3 and time.monotonic() < deadline and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            replicas[kill % 2].kill()
            replicas[kill % 2].start()
        for t in threads:
            t.join(300)
        assert not errors, errors
        assert len(acked) == 2 * n_requests
        assert retried  # the kills hit traffic: some requests were refused or cut off and retried elsewhere

        images, alerts = _stored(stream_name)
        stored = [sid for _, sid, _, _ in images]
        assert sorted(stored) == sorted(s for ids in acked.values() for s in ids)  # each acknowledged image once
        assert [seq for seq, _, _, _ in images] == list(range(1, len(images) + 1))

        # a key recorded through one replica replays through the other, with the stored ids
        key = next(iter(acked))
        files = [("images", (f"{key}-{j}.png", b, "image/png"))
                 for j, b in enumerate(_payload_of(key, id_pngs, blank_png, n_requests))]  # fmt: skip
        for r in replicas:
            again = httpx.post(f"{r.url}/v1/streams/{stream_name}/images", headers={"Idempotency-Key": key},
                               files=files, timeout=60)  # fmt: skip
            assert again.status_code == 200 and again.json()["replayed"] is True, again.text
            assert [x["id"] for x in again.json()["results"]] == [x["id"] for x in answers[key]["results"]]
        # the same key with other images is refused through either replica, and stores nothing
        other = [("images", (f"{key}-0.png", blank_png if files[0][1][1] != blank_png else id_pngs[0], "image/png"))]
        for r in replicas:
            refused = httpx.post(f"{r.url}/v1/streams/{stream_name}/images", headers={"Idempotency-Key": key},
                                 files=other, timeout=60)  # fmt: skip
            assert refused.status_code in (409, 422), refused.text
        assert len(_stored(stream_name)[0]) == len(images)

        # both replicas report the drift state of an offline recompute over the stored scores
        replay = DriftMonitor(trained_detector.calibration, DriftConfig(window_size=40, min_window=10, ert=500))
        scored = [(sc, tm) for _, _, sc, tm in images if sc is not None]
        replay.update([sc for sc, _ in scored], [tm for _, tm in scored])
        expected = replay.result()
        for r in replicas:
            status = httpx.get(f"{r.url}/v1/streams/{stream_name}/status", timeout=60).json()
            assert status["n_recorded"] == status["time"] == len(images)
            for k in ("n_window", "n_flagged", "p_val", "distance", "is_drift", "per_test"):
                assert status[k] == expected[k], k
        assert expected["is_drift"]

        # alerts: stored once per transition (kinds alternate, starting with drift); each sent at most once
        kinds = [kind for _, kind in alerts]
        assert kinds and kinds[0] == "drift" and all(a != b for a, b in zip(kinds, kinds[1:])), kinds
        sent = []
        for i in range(2):
            path = tmp_path / f"alerts{i}.jsonl"
            if path.exists():
                sent += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        sent_keys = [(a["seq"], a["kind"]) for a in sent if a["stream"] == stream_name]
        assert len(sent_keys) == len(set(sent_keys)) and set(sent_keys) <= set(alerts)
    finally:
        stop.set()
        for r in replicas:
            r.stop()


def _payload_of(key: str, id_pngs: list[bytes], blank_png: bytes, n_requests: int) -> list[bytes]:
    """The images sent under ``key`` (``w{worker}-r{k}``): the last third blank frames, so the stream drifts."""
    worker, k = (int(p[1:]) for p in key.split("-"))
    return [blank_png] * 3 if k >= n_requests * 2 // 3 else id_pngs[(worker * 50 + k * 3) % 117 :][:3]
