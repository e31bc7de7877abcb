"""``discopatch score``: score image files or folders into CSV or JSON lines, resumable, with optional heat maps."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED_INPUTS, EXIT_OK
from ..log import progress_bar
from .options import Subcommands, add_batch_size, add_device, add_engine, add_model, add_precision, examples
from .score_ray import add_ray_options, cmd_score_ray


def add_commands(sub: Subcommands) -> None:
    p = sub.add_parser(
        "score",
        help="score image files or folders",
        epilog=examples(
            "discopatch score model/ new_images/ more.jpg --out scores.csv",
            "discopatch score model/ big_folder/ --out scores.jsonl --resume",
            "discopatch score model/ suspicious.png --heatmaps maps/",
            "discopatch score model/ s3://bucket/images/ --ray auto --out scores.parquet",
        ),
    )
    add_model(p)
    p.add_argument("paths", nargs="+", help="image files and/or folders (with --ray also URIs: s3://, gs://, file://)")
    p.add_argument("--out", help="write rows to FILE.csv or FILE.jsonl (default: CSV on standard output)")
    add_batch_size(p)
    p.add_argument(
        "--resume", action="store_true", help="keep the rows already in --out, append only the files missing from it"
    )
    add_engine(p)
    add_precision(p)
    p.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="also write one PNG per readable image to DIR: D's per-patch contributions over the image as the "
        "model sees it (red = fake-like, blue = real-like); adds a heatmap column. Explains D's share only, "
        "not the per-image statistics of a fused score (see README)",
    )
    add_device(p)
    add_ray_options(p)
    p.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    if args.ray:
        return cmd_score_ray(args, _rows_written)
    from ..data.images import expand_paths, utf8_text
    from ..detector import Detector

    det = Detector.load(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        engine=args.engine,
        precision=args.precision,
        allow_legacy=args.allow_legacy_artifact,
    )
    paths = expand_paths(args.paths)
    fields = ["path", "score", "p_value", "is_ood", "error", "threshold", "model_id"]
    heat_dir = Path(args.heatmaps) if args.heatmaps else None
    if heat_dir is not None:
        heat_dir.mkdir(parents=True, exist_ok=True)
        fields.append("heatmap")
    out_path = Path(args.out) if args.out else None
    jsonl = out_path is not None and out_path.suffix.lower() in (".jsonl", ".ndjson")
    if out_path is not None and not jsonl and out_path.suffix.lower() != ".csv":
        raise ValueError(f"--out must end in .csv or .jsonl, got {out_path}")
    done: set[str] = set()
    earlier_failed = 0  # error rows already in --out: the file as a whole still has failed inputs
    if args.resume:
        if out_path is None:
            raise ValueError("--resume needs --out FILE")
        done, earlier_failed = _rows_written(out_path, jsonl, fields)
        paths = [p for p in paths if utf8_text(str(p)) not in done]
    append = bool(args.resume and out_path is not None and out_path.exists() and out_path.stat().st_size)
    fh = open(out_path, "a" if append else "w", newline="", encoding="utf-8") if out_path else sys.stdout  # noqa: SIM115
    n_fail = n = 0
    try:
        writer = None if jsonl else csv.DictWriter(fh, fieldnames=fields)
        if writer and not append:
            writer.writeheader()
        rows = det.iter_score_files(paths, explain=True) if heat_dir is not None else det.iter_score_files(paths)
        for row in progress_bar(rows, total=len(paths), desc="scoring", unit="img", disable=args.quiet):
            if heat_dir is not None:
                row["heatmap"] = _write_heatmap(heat_dir, row["path"], row.pop("explanation"))
            row = {k: utf8_text(v) if isinstance(v, str) else v for k, v in row.items()}
            n += 1
            n_fail += row["error"] is not None
            if jsonl:
                fh.write(json.dumps(row) + "\n")
            else:
                assert writer is not None
                writer.writerow(
                    {k: "" if row[k] is None else (str(row[k]).lower() if k == "is_ood" else row[k]) for k in fields}
                )
            fh.flush()
    finally:
        if out_path:
            fh.close()
    print(
        f"scored {n - n_fail} of {n} files"
        + (f"; {n_fail} failed (see the error column)" if n_fail else "")
        + (f"; {len(done)} already in {out_path}, skipped" if done else "")
        + (f" ({earlier_failed} of them failed, see the error column)" if earlier_failed else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED_INPUTS if n_fail or earlier_failed else EXIT_OK


def _write_heatmap(directory: Path, path: str, explanation: Any) -> str | None:
    """Write one overlay named after the file plus a hash of its full path (equal names in two folders differ)."""
    if explanation is None:
        return None
    import hashlib

    from ..explain import save_overlay

    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    target = directory / f"{Path(path).stem[:100]}-{digest}.png"
    save_overlay(explanation, str(target))
    return str(target)


def _rows_written(out_path: Path, jsonl: bool, fields: list[str]) -> tuple[set[str], int]:
    """Paths already in ``out_path`` and how many of their rows hold an error; a partly written last line (the run
    was killed mid-write) is cut off first."""
    if not out_path.exists():
        return set(), 0
    data = out_path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # everything up to the last complete line
    text = keep.decode("utf-8")
    if jsonl:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        done = {r["path"] for r in records}
        failed = {r["path"] for r in records if r.get("error") is not None}
    else:
        rows, text = _complete_csv_records(text, out_path)
        if rows and rows[0] != fields:
            if rows[0] == fields[: len(rows[0])]:  # an older discopatch wrote fewer columns (no threshold/model_id)
                raise ValueError(
                    f"{out_path}: written by an older discopatch without the columns {fields[len(rows[0]) :]}; "
                    "--resume cannot mix the two layouts: write to a new file"
                )
            raise ValueError(f"{out_path}: not a 'discopatch score' CSV (header {rows[0]}), cannot --resume into it")
        done = {r[0] for r in rows[1:] if r}
        at = fields.index("error")
        failed = {r[0] for r in rows[1:] if len(r) > at and r[at]}
    keep = text.encode("utf-8")
    if len(keep) != len(data):
        with open(out_path, "r+b") as f:
            f.truncate(len(keep))
    return done, len(failed)


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
            raise ValueError(f"{out_path}: malformed CSV record at line {line} ({e})") from None
    return rows, text[:end]
