"""Benchmark ``POST /v1/score`` of ``discopatch serve`` on localhost: sustained images/s and p50/p99 latency.

The server runs as a real ``discopatch serve`` subprocess (one uvicorn worker, SQLite in a temporary folder); the
clients are threads in this process, each with its own keep-alive connection, posting PNG-encoded Fashion-MNIST
test images as multipart for a fixed time after a warm-up. Every configuration is repeated and the medians are
reported. Clients and server share the machine's cores, so this measures the whole round trip on one box.

    python scripts/bench_serve.py --model MODEL_DIR [--clients 1,4] [--images 1,8] [--duration 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from discopatch.data.builtin import load_demo_fashion_mnist


def _pngs(n: int) -> list[bytes]:
    out = []
    for a in load_demo_fashion_mnist().test_images[:n]:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: str, port: int, db: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "discopatch", "serve", model, "--port", str(port), "--db", f"sqlite:///{db}",
           "--log-level", "warning", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not start")


def run_load(url: str, pngs: list[bytes], clients: int, per_request: int, warmup: float, duration: float) -> dict:
    """Closed loop: each client posts, waits for the answer, posts again. Only the timed phase is counted."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    t_start = time.monotonic() + warmup
    t_end = t_start + duration

    def client(c: int) -> None:
        k = c * 997
        with httpx.Client(base_url=url, timeout=120) as cl:
            while True:
                batch = [pngs[(k + j) % len(pngs)] for j in range(per_request)]
                files = [("images", (f"{k + j}.png", b, "image/png")) for j, b in enumerate(batch)]
                t0 = time.monotonic()
                if t0 >= t_end:
                    return
                r = cl.post("/v1/score", files=files)
                t1 = time.monotonic()
                ok = r.status_code == 200 and r.json()["n_errors"] == 0
                if t0 >= t_start and t1 <= t_end:
                    if ok:
                        latencies[c].append(t1 - t0)
                    else:
                        errors[c] += 1
                k += per_request

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat = np.array([x for lst in latencies for x in lst])
    return {
        "requests": int(lat.size),
        "errors": int(sum(errors)),
        "images_per_s": lat.size * per_request / duration,
        "p50_ms": float(np.percentile(lat, 50) * 1000) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99) * 1000) if lat.size else float("nan"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="detector directory (e.g. from: discopatch demo --out DIR)")
    ap.add_argument("--clients", default="1,4", help="comma-separated concurrent client counts")
    ap.add_argument("--images", default="1,8", help="comma-separated images per request")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--duration", type=float, default=15.0, help="timed seconds per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", dest="json_out", help="also write all runs as JSON")
    ap.add_argument("serve_args", nargs="*", help="extra 'discopatch serve' options after --, e.g. -- --threads 2")
    args = ap.parse_args()

    pngs = _pngs(500)
    configs = [(c, n) for c in map(int, args.clients.split(",")) for n in map(int, args.images.split(","))]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = start_server(args.model, port, Path(tmp) / "bench.db", args.serve_args)
        try:
            url = f"http://127.0.0.1:{port}"
            meta = httpx.get(f"{url}/healthz").json()["model"]
            for rep in range(args.repeats):
                for clients, per_request in configs:
                    res = run_load(url, pngs, clients, per_request, args.warmup, args.duration)
                    res.update(clients=clients, images_per_request=per_request, repeat=rep)
                    runs.append(res)
                    print(json.dumps(res), file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"model: preset {meta['preset']}, {meta['n_patches']} patches; {platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; {args.repeats} repeats x {args.duration:.0f} s; medians")  # fmt: skip
    print()
    print("| clients | images/request | images/s | p50 latency (ms) | p99 latency (ms) | errors |")
    print("|---:|---:|---:|---:|---:|---:|")
    for clients, per_request in configs:
        rs = [r for r in runs if r["clients"] == clients and r["images_per_request"] == per_request]
        med = {k: statistics.median(r[k] for r in rs) for k in ("images_per_s", "p50_ms", "p99_ms")}
        print(f"| {clients} | {per_request} | {med['images_per_s']:.0f} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} "
              f"| {sum(r['errors'] for r in rs)} |")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"model": meta, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
