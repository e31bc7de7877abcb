"""Fixtures for the reliability tests: the generated bad-input corpus on disk and a saved tiny detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from .corpus import bad_cases, good_images, non_image_files, write


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """Good images, every bad kind and two non-image files in one folder (as a user's upload folder would be)."""
    folder = tmp_path_factory.mktemp("corpus")
    write(good_images() + bad_cases() + non_image_files(), folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(trained_detector, tmp_path_factory) -> Path:
    return trained_detector.save(tmp_path_factory.mktemp("reliability-model") / "model")
