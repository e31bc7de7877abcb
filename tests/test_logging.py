"""The ``discopatch`` logger, JSON log lines, and progress as log lines outside a terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main

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


@pytest.fixture(scope="module")
def scored_folder(tmp_path_factory, trained_detector) -> tuple[Path, Path]:
    """A tiny fitted detector on disk and a folder of 12 generated PNGs."""
    root = tmp_path_factory.mktemp("progress")
    trained_detector.save(root / "model")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return root / "model", root / "images"


def _cli(argv: list[str], capsys, monkeypatch) -> str:
    """Run the CLI in-process with standard error captured (not a terminal) and a progress line per image."""
    monkeypatch.setenv("DISCOPATCH_PROGRESS_INTERVAL", "0")
    assert main(argv) == 0
    return capsys.readouterr().err


def test_score_logs_progress_lines_outside_a_terminal(scored_folder, tmp_path, capsys, monkeypatch) -> None:
    model, images = scored_folder
    err = _cli(
        ["score", str(model), str(images), "--out", str(tmp_path / "s.csv"), "--device", "cpu"], capsys, monkeypatch
    )
    progress = [line for line in err.splitlines() if " INFO discopatch: scoring: " in line]
    assert len(progress) == 13 and "scoring: done: 12/12 img (100%)" in progress[-1]
    assert "\r" not in err and "scored 12 of 12 files" in err


def test_evaluate_logs_progress_lines_outside_a_terminal(scored_folder, capsys, monkeypatch) -> None:
    model, images = scored_folder
    argv = ["evaluate", str(model), "--id", str(images), "--ood", f"same={images}", "--device", "cpu"]
    err = _cli(argv, capsys, monkeypatch)
    assert err.count(f"INFO discopatch: loading {images}: done: 12/12 img") == 2  # the ID set and the OOD set
    assert "\r" not in err


@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_quiet_means_no_progress(scored_folder, tmp_path, capsys, monkeypatch, command: str) -> None:
    model, images = scored_folder
    rest = ["--out", str(tmp_path / "s.csv")] if command == "score" else ["--id", str(images), "--ood", str(images)]
    argv = [command, str(model), *([str(images)] if command == "score" else []), *rest, "--device", "cpu", "--quiet"]
    err = _cli(argv, capsys, monkeypatch)
    assert "INFO" not in err and "img/s" not in err
    assert logging.getLogger("discopatch").level == logging.WARNING


def test_verbose_means_debug_lines(scored_folder, tmp_path, capsys, monkeypatch) -> None:
    model, images = scored_folder
    argv = ["score", str(model), str(images), "--out", str(tmp_path / "s.csv"), "--device", "cpu", "--verbose"]
    err = _cli(argv, capsys, monkeypatch)
    assert " DEBUG discopatch: discopatch " in err and " INFO discopatch: scoring: " in err


def test_python_warnings_follow_the_log_format() -> None:
    """A library warning used to be Python's two-line text block on standard error, whatever ``--log-format`` said
    : it is now a WARNING record in the run's format."""
    script = (
        "import warnings\nfrom discopatch.log import setup_logging\nsetup_logging(fmt='json')\n"
        "warnings.warn('too few calibration images', UserWarning)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0
    (record,) = [json.loads(line) for line in proc.stderr.splitlines()]
    assert record["level"] == "WARNING" and record["logger"] == "discopatch.warnings"
    assert record["message"] == "UserWarning: too few calibration images"
