"""Images per second of ``discopatch score --ray`` against plain ``discopatch score`` on the same files and cores.

    python scripts/bench_ray.py --model MODEL --work /tmp/raybench --n 20000 --repeats 3 [--json out.json]

Writes ``n`` small PNGs (the shipped Fashion-MNIST demo images, cycled, each flipped/rolled so every file differs),
then runs, interleaved ``repeats`` times (``--variants`` picks which): plain ``score``; ``score --ray ADDRESS``
against a cluster started once with ``ray start --head`` (a running cluster, the usual case); ``score --ray auto``
(a local cluster started and stopped by the command itself, so its start-up is in the time); ``score --ray ADDRESS
--ray-actors 1 --ray-threads 2`` (one scoring process like plain, so the difference is Ray's own overhead). Each run
is a fresh process timed from start to exit; outputs are checked to hold the same rows. Prints the median images/s
of each and the ratios to plain.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, n: int) -> None:
    from discopatch.data.builtin import load_demo_fashion_mnist

    root.mkdir(parents=True, exist_ok=True)
    if len(list(root.glob("*.png"))) == n:
        return
    images = np.concatenate([load_demo_fashion_mnist().train_images, load_demo_fashion_mnist().test_images])
    for i in range(n):
        img = images[i % len(images)]
        k = i // len(images)
        img = np.roll(np.fliplr(img) if k % 2 else img, k // 2, axis=0)
        Image.fromarray(np.ascontiguousarray(img)).save(root / f"img{i:05d}.png")


def timed(cmd: list[str], out: Path) -> float:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--out", str(out), "--quiet"], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", help="folder for the images and outputs (default: a new temporary folder)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--json")
    ap.add_argument("--variants", default="plain,ray-running-cluster,ray-auto,ray-1-actor")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="raybench-"))
    images = work / "images"
    make_images(images, a.n)
    base = [sys.executable, "-m", "discopatch", "score", a.model, str(images), "--engine", a.engine]
    port = "6390"
    ray_cli = str(Path(sys.executable).parent / "ray")
    subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            "--num-cpus",
            str(os.cpu_count()),
            f"--port={port}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},  # Ray 2.60's `ray start` requires a token otherwise
    )
    cmds = {
        "plain": base,
        "ray-running-cluster": [*base, "--ray", f"127.0.0.1:{port}"],
        "ray-auto": [*base, "--ray", "auto"],
        # one actor with both cores' threads: the same process count as plain, so only Ray's overhead differs
        "ray-1-actor": [*base, "--ray", f"127.0.0.1:{port}", "--ray-actors", "1", "--ray-threads", "2"],
    }
    cmds = {k: v for k, v in cmds.items() if k in a.variants.split(",")}
    runs: dict[str, list[float]] = {k: [] for k in cmds}
    env_auto = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        for r in range(a.repeats):
            for name, cmd in cmds.items():
                os.environ.clear()
                os.environ.update(env_auto)
                t = timed(cmd, work / f"{name}.csv")
                runs[name].append(t)
                print(f"repeat {r}: {name}: {t:.1f} s, {a.n / t:.0f} img/s", flush=True)
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True)
    plain_rows = list(csv.DictReader((work / "plain.csv").open()))
    max_diff = {}
    for name in cmds:
        rows = list(csv.DictReader((work / f"{name}.csv").open()))
        assert [r["path"] for r in rows] == [r["path"] for r in plain_rows], f"{name}: other rows than plain"
        max_diff[name] = max(abs(float(r["score"]) - float(p["score"])) for r, p in zip(rows, plain_rows))
    rate = {k: a.n / statistics.median(v) for k, v in runs.items()}
    summary = {
        "n_images": a.n,
        "cpus": os.cpu_count(),
        "seconds": runs,
        "median_images_per_s": rate,
        "ratio_to_plain": {k: v / rate["plain"] for k, v in rate.items()},
        "max_abs_score_difference_to_plain": max_diff,
    }
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
