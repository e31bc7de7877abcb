"""Per-image outputs: :class:`ImageResult` (one input), :class:`Prediction` (a call) and :func:`results_frame`.

:class:`ImageResult` is what :meth:`~discopatch.Detector.score_items` yields for every input, readable or not; the
command line, the service, the folder watcher and evaluation are all built on it, and :class:`Prediction` gathers
them for :meth:`~discopatch.Detector.predict`.

Every row, whichever call produced it, names its input (``source``) and the detector that judged it (``threshold``,
``model_id``), so rows from several runs or models can be concatenated and still be told apart. pandas is optional
(``pip install 'discopatch[pandas]'``) and imported only by :func:`results_frame`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .row_layout import COLUMNS, VALUE_COLUMNS, columns

if TYPE_CHECKING:
    import pandas

    from .inference.explain import Explanation


def finite_or_none(value: float | None) -> float | None:
    """A threshold as an output value: ``None`` when missing or infinite (too few calibration images)."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class ImageResult:
    """One input's outcome, in input order: its score or why it could not be scored.

    ``source`` names the input (a file path as given, ``#i`` for the i-th in-memory input, or the name the caller
    chose). ``score`` is the detector's configured score and ``d_score`` D's own score from the same forward pass
    (equal to ``score`` for a ``d-only`` detector); ``p_value`` and ``is_ood`` come from the calibration (``None``
    when the detector is uncalibrated). An unreadable input has every number ``None`` and its reason in ``error``.
    ``explanation`` is set when it was asked for (:meth:`~discopatch.Detector.score_items` with ``explain=True``).
    """

    source: str
    score: float | None = None
    d_score: float | None = None
    p_value: float | None = None
    is_ood: bool | None = None
    error: str | None = None
    explanation: Explanation | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the input was read and scored."""
        return self.error is None

    def values(self, with_d_score: bool = True) -> dict[str, Any]:
        """The :data:`~discopatch.row_layout.VALUE_COLUMNS` of this outcome (``d_score`` only if ``with_d_score``)."""
        row: dict[str, Any] = {"score": self.score, "d_score": self.d_score, "p_value": self.p_value}
        row |= {"is_ood": self.is_ood, "error": self.error}
        return {k: row[k] for k in VALUE_COLUMNS if with_d_score or k != "d_score"}

    def row(
        self, threshold: float | None, model_id: str | None, with_d_score: bool = True, source: str = "source"
    ) -> dict[str, Any]:
        """A :data:`~discopatch.row_layout.ROW_LAYOUT` row: the input under the key ``source``, ``d_score`` only
        if ``with_d_score``, and ``threshold`` ``None`` when infinite."""
        detector = {"threshold": finite_or_none(threshold), "model_id": model_id}
        return {source: self.source} | self.values(with_d_score) | detector

    def file_row(
        self, threshold: float | None, model_id: str | None, with_d_score: bool, explanation: bool = False
    ) -> dict[str, Any]:
        """The ``discopatch score`` row: :meth:`row` with the input as ``path``, then ``explanation`` when asked
        for."""
        row = self.row(threshold, model_id, with_d_score, source="path")
        if explanation:
            row["explanation"] = self.explanation
        return row


@dataclass(eq=False)
class Prediction(Mapping[str, Any]):
    """What :meth:`~discopatch.Detector.predict` returns: one entry per input, in input order.

    It is a read-only mapping with the keys of the dict that ``predict`` used to return (``scores``, ``p_values``,
    ``is_ood``, ``threshold``, ``meta``) plus ``sources``, ``errors``, ``model_id`` and, for a fused or
    statistics-only detector, ``d_scores`` (D's own score from the same pass), so ``out["scores"]`` still works.
    An input that could not be read has a NaN score and p-value, ``is_ood`` False and its reason in ``errors``
    (``None`` for the others). ``threshold`` is the calibrated one (infinite when there were too few calibration
    images to flag anything); :meth:`rows` writes that case as ``None``, like ``discopatch score``.
    """

    sources: list[str]
    scores: np.ndarray
    p_values: np.ndarray
    is_ood: np.ndarray
    errors: list[str | None]
    threshold: float
    model_id: str | None
    meta: dict[str, Any]
    d_scores: np.ndarray | None = None

    @classmethod
    def from_results(
        cls,
        results: Iterable[ImageResult],
        threshold: float,
        model_id: str | None,
        meta: dict[str, Any],
        with_d_scores: bool,
    ) -> Prediction:
        """Gather per-image results: unreadable inputs get NaN numbers and ``is_ood`` False."""
        res = list(results)
        nan = math.nan

        def column(values: list[Any]) -> np.ndarray:
            return np.array(values, dtype=np.float64) if values else np.zeros(0)

        return cls(
            sources=[r.source for r in res],
            scores=column([nan if r.score is None else r.score for r in res]),
            p_values=column([nan if r.p_value is None else r.p_value for r in res]),
            is_ood=np.array([bool(r.is_ood) for r in res], dtype=bool),
            errors=[r.error for r in res],
            threshold=threshold,
            model_id=model_id,
            meta=meta,
            d_scores=column([nan if r.d_score is None else r.d_score for r in res]) if with_d_scores else None,
        )

    def results(self) -> list[ImageResult]:
        """One :class:`ImageResult` per input (without explanations)."""
        out = []
        for i, source in enumerate(self.sources):
            if self.errors[i] is not None:
                out.append(ImageResult(source, error=self.errors[i]))
                continue
            score = float(self.scores[i])
            d = score if self.d_scores is None else float(self.d_scores[i])
            out.append(ImageResult(source, score, d, float(self.p_values[i]), bool(self.is_ood[i])))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (``d_scores`` only when present)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.d_scores is None:
            del out["d_scores"]
        return out

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def rows(self) -> list[dict[str, Any]]:
        """One :data:`~discopatch.row_layout.ROW_LAYOUT` row per input (``d_score`` only when present); missing
        values are ``None``, so the rows serialise to JSON as they are."""
        with_d = self.d_scores is not None
        return [r.row(self.threshold, self.model_id, with_d) for r in self.results()]

    def to_frame(self) -> pandas.DataFrame:
        """:meth:`rows` as a pandas DataFrame (see :func:`results_frame`)."""
        return results_frame(self.rows())


def results_frame(rows: Iterable[Mapping[str, Any]]) -> pandas.DataFrame:
    """A pandas DataFrame with one row per input from :meth:`Prediction.rows` or
    :meth:`~discopatch.Detector.iter_score_files` rows (their ``path`` becomes ``source``).

    Columns follow :data:`~discopatch.row_layout.COLUMNS`, then any other keys; scores, p-values and the
    threshold are float64 with NaN where missing, ``is_ood`` is pandas' nullable ``boolean``.
    """
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "results_frame() and to_frame() need pandas; install it with: pip install 'discopatch[pandas]'"
        ) from None
    records = [{("source" if k == "path" else k): v for k, v in r.items()} for r in rows]
    keys = list(dict.fromkeys(k for r in records for k in r))
    if not records:
        keys = columns(with_d_score=False)
    order = [c for c in COLUMNS if c in keys] + [k for k in keys if k not in COLUMNS]
    frame: pandas.DataFrame = pd.DataFrame.from_records(records, columns=order)
    for col in ("score", "d_score", "p_value", "threshold"):
        if col in frame:
            frame[col] = frame[col].astype("float64")
    if "is_ood" in frame:
        frame["is_ood"] = frame["is_ood"].astype("boolean")
    return frame
