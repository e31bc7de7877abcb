"""The monitoring layer's defaults and closed sets of choices, in a leaf without numpy, scipy or the ``serve``
extra, so that the command line offers them (``--db``, ``--thumbnails``, ``--binomial-method``) without importing
the layer."""

from __future__ import annotations

from typing import Literal, get_args

DEFAULT_DB_URL = "sqlite:///discopatch-monitor.db"
#: Which recorded images keep a thumbnail (``serve``/``monitor --thumbnails``).
Thumbnails = Literal["flagged", "all", "none"]
THUMBNAILS: tuple[Thumbnails, ...] = get_args(Thumbnails)
#: The window test of the flagged count: ``beta-binomial`` allows for the finite calibration set, ``binomial``
#: ignores its uncertainty.
BinomialMethod = Literal["beta-binomial", "binomial"]
BINOMIAL_METHODS: tuple[BinomialMethod, ...] = get_args(BinomialMethod)
