"""Training steps/s of two source trees side by side: same data, same seed, runs interleaved (A, B, A, B, ...).

Each run is a fresh process (``PYTHONPATH`` = that tree's ``src``) that trains ``--steps`` steps of the preset
with ``Trainer.fit`` on the same random uint8 images and prints its step times, losses and a hash of the final
weights. Interleaving makes the neighbours' load on a shared machine hit both trees alike, so the ratio of the
medians means something even where the absolute times do not. Identical hashes and loss histories show that the
arithmetic did not change.

    python scripts/train_speed_ab.py --a /path/to/old/src --b src --threads 1,2 --rounds 3 --steps 12

``--b-env OMP_WAIT_POLICY=PASSIVE`` runs tree B under an environment setting (``--a`` and ``--b`` may then be the
same tree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any


def child(preset_name: str, channels: int, steps: int, threads: int) -> dict[str, Any]:
    """One training run in this process; the step times exclude the first (warm-up) step."""
    import numpy as np
    import torch

    from discopatch.presets import get_preset
    from discopatch.training.trainer import Trainer

    torch.set_num_threads(threads)
    preset = get_preset(preset_name, channels)
    cfg = preset.train.__class__(**{**preset.train.__dict__, "max_steps": steps, "epochs": None})
    size = preset.preprocess.image_size
    images = np.random.default_rng(0).integers(0, 256, size=(512, size, size, channels), dtype=np.uint8)
    trainer = Trainer(preset.model, cfg)
    stamps: list[tuple[float, float]] = []

    def stamp(st: Any, logs: Any) -> None:
        stamps.append((time.perf_counter(), time.process_time()))

    trainer.fit(images, progress=False, log_every=1, callback=stamp)
    h = hashlib.sha256()
    for t in list(trainer.D.state_dict().values()) + list(trainer.vae.state_dict().values()):
        h.update(t.detach().contiguous().numpy().tobytes())
    return {
        "step_seconds": [b[0] - a[0] for a, b in zip(stamps[:-1], stamps[1:])],
        # process CPU time: what a step costs without the time the neighbours held the cores
        "step_cpu_seconds": [b[1] - a[1] for a, b in zip(stamps[:-1], stamps[1:])],
        "losses": [{k: v for k, v in r.items() if k != "time"} for r in trainer.state.history],
        "weights_sha256": h.hexdigest(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="src folder of tree A (the baseline)")
    ap.add_argument("--b", required=True, help="src folder of tree B")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12, help="steps per run (the first is not timed)")
    ap.add_argument("--threads", default="1", help="torch thread counts, e.g. 1,2 (each tree runs at each)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per (tree, threads), interleaved")
    ap.add_argument("--b-env", action="append", default=[], help="KEY=VALUE set for tree B's runs only (repeatable)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.preset, args.channels, args.steps, int(args.threads))))
        return
    threads = [int(t) for t in args.threads.split(",")]
    runs = [(tree, th) for th in threads for tree in ("a", "b")]
    times: dict[tuple[str, int], list[float]] = {r: [] for r in runs}
    cpu: dict[tuple[str, int], list[float]] = {r: [] for r in runs}
    results: dict[tuple[str, int], list[dict[str, Any]]] = {r: [] for r in runs}
    for _ in range(args.rounds):
        for tree, th in runs:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(getattr(args, tree))}
            if tree == "b":
                env.update(kv.split("=", 1) for kv in args.b_env)
            cmd = [sys.executable, __file__, "--child", "--a", "-", "--b", "-", "--preset", args.preset]
            cmd += ["--channels", str(args.channels), "--steps", str(args.steps), "--threads", str(th)]
            out = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)
            times[(tree, th)] += out["step_seconds"]
            cpu[(tree, th)] += out["step_cpu_seconds"]
            results[(tree, th)].append(out)
    print("tree  threads  median s/step  steps/s  median CPU-s/step  weights sha256 (first 16)")
    for tree, th in runs:
        med, med_cpu = statistics.median(times[(tree, th)]), statistics.median(cpu[(tree, th)])
        shas = sorted({r["weights_sha256"][:16] for r in results[(tree, th)]})
        print(f"{tree:4s}  {th:7d}  {med:13.3f}  {1 / med:7.2f}  {med_cpu:17.3f}  {', '.join(shas)}")
    base = statistics.median(times[("a", threads[0])])
    base_cpu = statistics.median(cpu[("a", threads[0])])
    for tree, th in runs:
        ratio = base / statistics.median(times[(tree, th)])
        ratio_cpu = base_cpu / statistics.median(cpu[(tree, th)])
        print(f"speed-up of {tree}@{th} threads over a@{threads[0]}: {ratio:.2f}x wall, {ratio_cpu:.2f}x CPU time")
    for th in threads:
        same = results[("a", th)][0]["losses"] == results[("b", th)][0]["losses"]
        same_w = results[("a", th)][0]["weights_sha256"] == results[("b", th)][0]["weights_sha256"]
        print(f"threads={th}: losses identical a vs b: {same}; final weights identical: {same_w}")


if __name__ == "__main__":
    main()
