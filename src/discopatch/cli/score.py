"""``discopatch score``: score image files or folders into CSV or JSON lines, resumable, with optional heat maps."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..log import progress_bar
from .options import Subcommands, add_batch_size, add_device, add_engine, add_model, add_precision, examples
from .score_ray import add_ray_options, cmd_score_ray
from .score_rows import csv_cell, finish, output_fields, rows_written


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
        return cmd_score_ray(args)
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
    heat_dir = Path(args.heatmaps) if args.heatmaps else None
    fields = output_fields(det.preset.score_mode != "d-only", heatmaps=heat_dir is not None)
    if heat_dir is not None:
        heat_dir.mkdir(parents=True, exist_ok=True)
    out_path = Path(args.out) if args.out else None
    jsonl = out_path is not None and out_path.suffix.lower() in (".jsonl", ".ndjson")
    if out_path is not None and not jsonl and out_path.suffix.lower() != ".csv":
        raise UsageError(f"--out must end in .csv or .jsonl, got {out_path}")
    done: set[str] = set()
    earlier_failed = 0  # error rows already in --out: the file as a whole still has failed inputs
    if args.resume:
        if out_path is None:
            raise UsageError("--resume needs --out FILE")
        done, earlier_failed, fields = rows_written(out_path, jsonl, fields)
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
                writer.writerow({k: csv_cell(k, row[k]) for k in fields})
            fh.flush()
    finally:
        if out_path:
            fh.close()
    return finish(n, n_fail, done, out_path, earlier_failed)


def _write_heatmap(directory: Path, path: str, explanation: Any) -> str | None:
    """Write one overlay named after the file plus a hash of its full path (equal names in two folders differ)."""
    if explanation is None:
        return None
    import hashlib

    from ..inference.explain import save_overlay

    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    target = directory / f"{Path(path).stem[:100]}-{digest}.png"
    save_overlay(explanation, str(target))
    return str(target)
