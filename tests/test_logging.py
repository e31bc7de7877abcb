"""Issue 14, item 3: the ``discopatch`` logger, JSON log lines, and progress as log lines outside a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

SCRIPT = """
import sys
import numpy as np
from discopatch.config import PreprocessConfig
from discopatch.data.sources import load_images
from discopatch.log import setup_logging
setup_logging(fmt=sys.argv[1])
images = [np.full((28, 28), i, np.uint8) for i in range(7)]
load_images(images, PreprocessConfig(image_size=16, channels=1), progress=True, desc="reading")
"""


def _run(fmt: str, interval: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC, DISCOPATCH_PROGRESS_INTERVAL=interval, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt], capture_output=True, text=True, env=env, timeout=120, check=True
    )


def test_progress_outside_a_terminal_is_json_log_lines() -> None:
    """stderr is a pipe: no carriage-return frames; with a zero interval one line per image plus a final one."""
    err = _run("json", "0").stderr
    assert "\r" not in err
    lines = [json.loads(line) for line in err.splitlines()]
    assert len(lines) == 8 and {x["logger"] for x in lines} == {"discopatch"}
    assert lines[0]["message"].startswith("reading: 1/7 img") and lines[-1]["message"].startswith("reading: done: 7/7")
    assert all(x["level"] == "INFO" and isinstance(x["time"], float) for x in lines)


def test_default_interval_logs_only_the_end_of_short_work() -> None:
    err = _run("text", "3600").stderr
    (line,) = err.splitlines()
    assert "\r" not in err and " INFO discopatch: reading: done: 7/7 img (100%)" in line
