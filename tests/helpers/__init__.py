"""Importable test helpers (presets, image payloads); fixtures stay in the ``conftest.py`` files.

Tests import these as ``from helpers.presets import tiny_preset``: pytest puts ``tests/`` on ``sys.path`` when it
loads ``tests/conftest.py`` (rootdir-relative "prepend" import mode), so this works from the repository root for the
whole suite and for a single file alike.
"""
