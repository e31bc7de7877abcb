"""``discopatch score --ray``: the same rows as ``discopatch score``, scored on a Ray cluster's actor pool.

Kept beside ``cli/score.py`` (which calls :func:`add_ray_options` and :func:`cmd_score_ray`) so the plain path stays
free of Ray. The driver expands the inputs, drops those already in ``--out`` (``--resume``), streams the dataset
from :func:`discopatch.scale.score_inputs` in input order and writes the rows itself: one CSV, JSON-lines or Parquet
file, never a folder of parts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..log import progress_bar
from .options import require_extra
from .score_rows import csv_cell, finish, output_fields, rows_written


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray cluster (score on a Ray Data actor pool; needs the [ray] extra, see docs/SCALING.md)")
    g.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="score on a Ray cluster: 'auto' (the cluster in RAY_ADDRESS, else a local one on this machine's CPUs) "
        "or a cluster address (host:6379, ray://host:10001); inputs may also be URIs pyarrow reads (s3://, gs://, "
        "file://), and --out may end in .parquet",
    )
    g.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="actors in the pool, each loads the detector once "
        "(default: one per cluster CPU, or per --ray-gpus-per-actor of its GPUs)",
    )
    g.add_argument(
        "--ray-cpus-per-actor",
        type=float,
        default=0.5,
        metavar="C",
        help="CPUs each actor reserves; keep it fractional on small machines so read tasks still run",
    )
    g.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each actor reserves (0: CPU actors; 0.25 puts four actors on one GPU)",
    )
    g.add_argument(
        "--ray-threads",
        type=int,
        metavar="T",
        help="PyTorch / ONNX Runtime threads per actor (default: its CPUs, rounded up)",
    )


def cmd_score_ray(args: argparse.Namespace) -> int:
    require_extra("ray", "ray", "ray.data", "pyarrow")
    from .. import scale
    from ..artifact.files import load_artifact
    from ..data.images import utf8_text

    if args.heatmaps:
        raise UsageError("--heatmaps is not available with --ray; score those files without --ray")
    for name in ("ray_actors", "ray_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    out_path = Path(args.out) if args.out else None
    kind = _out_kind(out_path)
    # a damaged detector is refused here, before any cluster is started
    fields = output_fields(load_artifact(args.model, args.allow_legacy_artifact).score_mode != "d-only")
    paths = scale.expand_inputs(args.paths)
    done: set[str] = set()
    earlier_failed = 0  # error rows already in --out: the file as a whole still has failed inputs
    if args.resume:
        if out_path is None:
            raise UsageError("--resume needs --out FILE")
        if kind == "parquet":
            done, earlier_failed = _parquet_rows(out_path)
        else:
            done, earlier_failed, fields = rows_written(out_path, kind == "jsonl", fields)
        paths = [p for p in paths if utf8_text(str(p)) not in done]
    started = scale.connect(args.ray) if paths else False
    try:
        append = bool(done) or (_nonempty(out_path) and args.resume)
        n, n_fail = _run(args, scale, paths, _Writer(out_path, kind, append, fields))
    finally:
        if started:
            import ray

            ray.shutdown()
    return finish(n, n_fail, done, out_path, earlier_failed, " on Ray")


def _run(args: argparse.Namespace, scale: Any, paths: list[Any], writer: _Writer) -> tuple[int, int]:
    """Stream the scored rows into the output; returns (rows, error rows)."""
    n = n_fail = 0
    try:
        if paths:
            import ray.data

            scale.quiet_data_context()
            ray.data.DataContext.get_current().execution_options.preserve_order = True
            ds = scale.score_inputs(
                paths,
                args.model,
                actors=args.ray_actors,
                cpus_per_actor=args.ray_cpus_per_actor,
                gpus_per_actor=args.ray_gpus_per_actor,
                threads=args.ray_threads,
                batch_size=args.batch_size,
                device=args.device,
                engine=args.engine,
                precision=args.precision,
                allow_legacy=args.allow_legacy_artifact,
            )
            bar = progress_bar(total=len(paths), desc="scoring on Ray", unit="img", disable=args.quiet)
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    writer.write(batch)
                    n += batch.num_rows
                    n_fail += batch.num_rows - batch.column("error").null_count
                    bar.update(batch.num_rows)
            finally:
                bar.close()
        writer.finish()
    finally:
        writer.close()
    return n, n_fail


def _out_kind(out_path: Path | None) -> str:
    if out_path is None:
        return "csv"
    suffix = out_path.suffix.lower()
    kinds = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
    if suffix not in kinds:
        raise UsageError(f"--out must end in .csv, .jsonl or .parquet, got {out_path}")
    return kinds[suffix]


def _nonempty(path: Path | None) -> bool:
    return path is not None and path.exists() and path.stat().st_size > 0


def _parquet_rows(path: Path) -> tuple[set[str], int]:
    """Paths in an existing Parquet output (written whole at the end of a run, so it is complete or absent) and how
    many of their rows hold an error."""
    if not path.exists():
        return set(), 0
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["path", "error"])
    return {str(p) for p in table.column("path").to_pylist()}, len(table) - table.column("error").null_count


class _Writer:
    """One output file: CSV / JSON lines appended and flushed per batch (so ``--resume`` finds every finished row);
    Parquet into a hidden partial file renamed over ``--out`` at the end (a Parquet file is readable only once its
    footer is written), with the rows of a resumed file copied first. CSV rows have the columns ``fields``."""

    def __init__(self, out_path: Path | None, kind: str, append: bool, fields: list[str]) -> None:
        self.out_path, self.kind, self.append, self.fields = out_path, kind, append, fields
        self.fh: Any = None
        self.csv: Any = None
        self.pq: Any = None
        self.partial: Path | None = None
        if kind != "parquet":
            mode = "a" if append else "w"
            self.fh = open(out_path, mode, newline="", encoding="utf-8") if out_path else sys.stdout  # noqa: SIM115
            if kind == "csv":
                self.csv = csv.DictWriter(self.fh, fieldnames=fields, extrasaction="ignore")
                if not append:
                    self.csv.writeheader()

    def write(self, batch: Any) -> None:
        if self.kind == "parquet":
            self._write_parquet(batch)
            return
        for row in batch.to_pylist():
            if self.csv is not None:
                self.csv.writerow({k: csv_cell(k, row[k]) for k in self.fields})
            else:
                self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def _write_parquet(self, batch: Any) -> None:
        import pyarrow.parquet as pq

        assert self.out_path is not None
        if self.pq is None:
            self.partial = self.out_path.with_name(f".{self.out_path.name}.partial")
            self.pq = pq.ParquetWriter(self.partial, batch.schema)
            if self.append and self.out_path.exists():
                old = pq.read_table(self.out_path)
                if old.schema.names != batch.schema.names:
                    raise UsageError(
                        f"{self.out_path}: columns {old.schema.names} differ from this run's {batch.schema.names}; "
                        "--resume cannot mix the two: write to a new file"
                    )
                self.pq.write_table(old.cast(batch.schema))
        self.pq.write_table(batch)

    def finish(self) -> None:
        """Close the output; a finished Parquet file replaces ``--out`` (created empty-schema-less if no rows)."""
        if self.kind != "parquet":
            return
        assert self.out_path is not None
        if self.pq is None:
            if self.append:
                return  # nothing new: the resumed file stays as it is
            import pyarrow.parquet as pq

            from ..scale_actor import output_schema

            self.partial = self.out_path.with_name(f".{self.out_path.name}.partial")
            self.pq = pq.ParquetWriter(self.partial, output_schema(True))
        self.pq.close()
        self.pq = None
        assert self.partial is not None
        os.replace(self.partial, self.out_path)

    def close(self) -> None:
        if self.pq is not None:  # an interrupted Parquet run: drop the unreadable partial file
            self.pq.close()
            if self.partial is not None:
                self.partial.unlink(missing_ok=True)
        if self.fh is not None and self.fh is not sys.stdout:
            self.fh.close()
