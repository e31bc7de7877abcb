"""Per-image outputs in a form data tools take directly: :class:`Prediction` and :func:`results_frame`.

Every row, whichever call produced it, names its input (``source``) and the detector that judged it (``threshold``,
``model_id``), so rows from several runs or models can be concatenated and still be told apart. pandas is optional
(``pip install 'discopatch[pandas]'``) and imported only by :func:`results_frame`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas

#: Column order of :func:`results_frame`; other keys of the rows follow these.
COLUMNS = ("source", "score", "d_score", "p_value", "is_ood", "threshold", "model_id", "error")


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
        """One dict per input with the keys of :data:`COLUMNS` (``d_score`` only when present); missing values
        are ``None``, so the rows serialise to JSON as they are."""
        thr = float(self.threshold) if math.isfinite(self.threshold) else None
        out = []
        for i, source in enumerate(self.sources):
            ok = self.errors[i] is None
            row: dict[str, Any] = {"source": source, "score": float(self.scores[i]) if ok else None}
            if self.d_scores is not None:
                row["d_score"] = float(self.d_scores[i]) if ok else None
            row |= {
                "p_value": float(self.p_values[i]) if ok else None,
                "is_ood": bool(self.is_ood[i]) if ok else None,
                "threshold": thr,
                "model_id": self.model_id,
                "error": self.errors[i],
            }
            out.append(row)
        return out

    def to_frame(self) -> pandas.DataFrame:
        """:meth:`rows` as a pandas DataFrame (see :func:`results_frame`)."""
        return results_frame(self.rows())


def results_frame(rows: Iterable[Mapping[str, Any]]) -> pandas.DataFrame:
    """A pandas DataFrame with one row per input from :meth:`Prediction.rows` or
    :meth:`~discopatch.Detector.iter_score_files` rows (their ``path`` becomes ``source``).

    Columns follow :data:`COLUMNS`, then any other keys; scores, p-values and the threshold are float64 with NaN
    where missing, ``is_ood`` is pandas' nullable ``boolean``.
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
        keys = [c for c in COLUMNS if c != "d_score"]
    columns = [c for c in COLUMNS if c in keys] + [k for k in keys if k not in COLUMNS]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for col in ("score", "d_score", "p_value", "threshold"):
        if col in frame:
            frame[col] = frame[col].astype("float64")
    if "is_ood" in frame:
        frame["is_ood"] = frame["is_ood"].astype("boolean")
    return frame
