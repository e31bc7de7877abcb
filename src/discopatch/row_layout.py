"""The one per-image row layout: the columns every per-image output writes, their order and what they hold.

A leaf module without numpy, so that the command line (``discopatch score``'s CSV columns) and the service's
schemas read the same specification that :class:`discopatch.results.ImageResult` builds its rows from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column of the per-image row layout: its name and what it holds (the service's API schema reads it)."""

    name: str
    description: str


#: The one row layout behind every per-image output, in order: ``discopatch score``'s CSV and JSON lines (and
#: ``--ray``'s Parquet), :meth:`~discopatch.results.Prediction.rows`,
#: :func:`~discopatch.results.results_frame` and the service's results. The input's
#: column is spelled per output (:func:`columns`); ``d_score`` is left out for a ``d-only`` detector, where it is
#: the score itself. The service sends ``threshold`` and ``model_id`` once per response instead of per image.
ROW_LAYOUT = (
    Column("source", "the input: a file path as given, #i for the i-th in-memory input, or the caller's name"),
    Column("score", "OOD score, higher = more OOD; null when the input could not be scored"),
    Column("d_score", "the discriminator's own score from the same pass (fused and statistics-only detectors)"),
    Column("p_value", "conformal p-value against the calibration scores"),
    Column("is_ood", "score > threshold (p_value <= target FPR)"),
    Column("error", "why this input could not be scored (null when it was)"),
    Column("threshold", "the calibrated threshold (null when infinite: too few calibration images)"),
    Column("model_id", "the detector's model id (hash of its saved files; null for a detector never saved)"),
)
#: The column names of :data:`ROW_LAYOUT`, in order.
COLUMNS = tuple(c.name for c in ROW_LAYOUT)
#: The judging detector's columns: per row in files and frames, per response in the service.
DETECTOR_COLUMNS = ("threshold", "model_id")
#: What one input's outcome holds, without its name or the detector: the service's per-image values.
VALUE_COLUMNS = tuple(c for c in COLUMNS[1:] if c not in DETECTOR_COLUMNS)


def columns(source: str = "source", with_d_score: bool = True) -> list[str]:
    """:data:`COLUMNS` with the input's column called ``source`` (``path`` in ``discopatch score`` files,
    ``source_id`` in the service) and ``d_score`` only if ``with_d_score``."""
    return [source if c == "source" else c for c in COLUMNS if with_d_score or c != "d_score"]


def description(name: str) -> str:
    """What the column ``name`` of :data:`ROW_LAYOUT` holds."""
    return next(c.description for c in ROW_LAYOUT if c.name == name)
