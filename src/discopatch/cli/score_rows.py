"""What ``discopatch score`` has already written, and its closing line: shared by the plain and the ``--ray`` path.

``--resume`` reads an existing CSV or JSON-lines output (cutting a torn last record, as a killed run leaves it) to
skip the inputs it holds; a run's exit status is the whole output's, so error rows from earlier runs count.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED_INPUTS, EXIT_OK, UsageError
from ..row_layout import columns


def output_fields(with_d_score: bool, heatmaps: bool = False) -> list[str]:
    """The columns of a ``discopatch score`` row (:data:`discopatch.row_layout.ROW_LAYOUT` with the input as ``path``),
    alike in CSV, JSON lines and Parquet; ``--heatmaps`` adds ``heatmap``."""
    return columns("path", with_d_score) + (["heatmap"] if heatmaps else [])


def csv_cell(key: str, value: Any) -> Any:
    """A row value as a CSV cell: empty for ``None``, ``is_ood`` in lower case (``true``/``false``) as in JSON."""
    if value is None:
        return ""
    return str(value).lower() if key == "is_ood" else value


def finish(n: int, n_fail: int, done: set[str], out_path: Path | None, earlier_failed: int, where: str = "") -> int:
    """Print the closing line of a scoring run and return its exit status (1 while the output holds an error row)."""
    print(
        f"scored {n - n_fail} of {n} files{where}"
        + (f"; {n_fail} failed (see the error column)" if n_fail else "")
        + (f"; {len(done)} already in {out_path}, skipped" if done else "")
        + (f" ({earlier_failed} of them failed, see the error column)" if earlier_failed else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED_INPUTS if n_fail or earlier_failed else EXIT_OK


def rows_written(out_path: Path, jsonl: bool, fields: list[str]) -> tuple[set[str], int, list[str]]:
    """Paths already in ``out_path``, how many of their rows hold an error, and the CSV columns to append in; a
    partly written last line (the run was killed mid-write) is cut off first.

    The columns are ``fields``, or the file's own header where it is ``fields`` without ``d_score``: CSV files of
    fused detectors were written without it before, and appending rows of another shape would break the file.
    """
    if not out_path.exists():
        return set(), 0, fields
    data = out_path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # everything up to the last complete line
    text = keep.decode("utf-8")
    if jsonl:
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:  # as for a CSV: a file this program did not write, refused as given
            raise UsageError(f"{out_path}: malformed JSON line ({e}), cannot --resume into it") from None
        done = {r["path"] for r in records}
        failed = {r["path"] for r in records if r.get("error") is not None}
    else:
        rows, text = _complete_csv_records(text, out_path)
        if rows:
            fields = _csv_layout(rows[0], fields, out_path)
        done = {r[0] for r in rows[1:] if r}
        at = fields.index("error")
        failed = {r[0] for r in rows[1:] if len(r) > at and r[at]}
    keep = text.encode("utf-8")
    if len(keep) != len(data):
        with open(out_path, "r+b") as f:
            f.truncate(len(keep))
    return done, len(failed), fields


def _csv_layout(header: list[str], fields: list[str], out_path: Path) -> list[str]:
    """The columns of an existing CSV output that this run can append to: ``fields``, or ``fields`` without
    ``d_score``; anything else is refused (an older layout without ``threshold``/``model_id`` by name)."""
    layouts = [fields, [f for f in fields if f != "d_score"]]
    if header in layouts:
        return header
    for layout in layouts:
        if header == layout[: len(header)]:  # an older discopatch wrote fewer columns (no threshold/model_id)
            raise UsageError(
                f"{out_path}: written by an older discopatch without the columns {layout[len(header) :]}; "
                "--resume cannot mix the two layouts: write to a new file"
            )
    raise UsageError(f"{out_path}: not a 'discopatch score' CSV (header {header}), cannot --resume into it")


def _complete_csv_records(text: str, out_path: Path) -> tuple[list[list[str]], str]:
    """The complete CSV records of ``text`` and the text they span: a record cut inside a quoted field (a path or
    error with a newline, killed mid-write) is dropped so that it is written again whole, not left malformed."""
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        for line in io.StringIO(text, newline=""):
            consumed += len(line)
            yield line

    rows: list[list[str]] = []
    end = 0
    try:
        for row in csv.reader(lines(), strict=True):  # the reader never reads past the record it returns
            rows.append(row)
            end = consumed
    except csv.Error as e:
        if consumed != len(text):  # damage before the end: not a torn last record
            line = text.count("\n", 0, end) + 1
            raise UsageError(f"{out_path}: malformed CSV record at line {line} ({e})") from None
    return rows, text[:end]
