"""``discopatch serve`` and ``discopatch monitor``: the HTTP service and folder / stdin monitoring with drift
detection. FastAPI, SQLAlchemy, numpy and the detector are imported only when these commands run."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, NotFittedError, UsageError
from ..monitoring.choices import BINOMIAL_METHODS, DEFAULT_DB_URL, THUMBNAILS
from .config_files import add_config_options
from .options import (
    Subcommands,
    add_batch_size,
    add_device,
    add_engine,
    add_log_format,
    add_model,
    examples,
    port_number,
    require_extra,
)

if TYPE_CHECKING:
    from ..monitoring.drift import DriftConfig


def _add_common(p: argparse.ArgumentParser) -> None:
    add_model(p)
    p.add_argument("--db", default=DEFAULT_DB_URL, help=f"SQLAlchemy URL or SQLite file (default {DEFAULT_DB_URL})")
    add_device(p)
    add_engine(p)
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's choice)")
    add_batch_size(p)
    g = p.add_argument_group("drift detection")
    g.add_argument("--window", type=int, default=200, help="window length in images (0: no count limit)")
    g.add_argument("--window-seconds", type=float, help="window length in seconds (default: none)")
    g.add_argument("--min-window", type=int, default=30, help="window tests wait for this many images")
    g.add_argument("--p-val", type=float, default=0.001, help="significance of the window tests (default 0.001)")
    g.add_argument("--ert", type=float, default=10_000, help="images between CUSUM false alarms (default 10000)")
    g.add_argument("--cusum-theta", type=float, default=0.5, help="CUSUM tuned to p ~ Beta(theta, 1)")
    g.add_argument("--tests", default="binomial,ks,cusum", help="comma-separated subset of binomial,ks,cusum")
    g.add_argument(
        "--binomial-method",
        choices=BINOMIAL_METHODS,
        default="beta-binomial",
        help="window test of the flagged count; beta-binomial allows for the finite calibration set",
    )
    g = p.add_argument_group("alerts")
    g.add_argument("--webhook", action="append", default=[], metavar="URL", help="POST alerts here (repeatable)")
    g.add_argument("--webhook-timeout", type=float, default=5.0, help="seconds per webhook request")
    g.add_argument("--webhook-retries", type=int, default=3, help="retries of a failed webhook request")
    g.add_argument("--alerts-jsonl", metavar="FILE", help="append alerts to this JSON-lines file")
    p.add_argument("--thumbnails", choices=THUMBNAILS, default="flagged", help="which images keep one")


def drift_config(args: argparse.Namespace) -> DriftConfig:
    from ..monitoring.drift import DriftConfig

    return DriftConfig(
        window_size=args.window or None,
        window_seconds=args.window_seconds,
        min_window=args.min_window,
        p_val=args.p_val,
        tests=tuple(t.strip() for t in args.tests.split(",") if t.strip()),
        binomial_method=args.binomial_method,
        ert=args.ert,
        cusum_theta=args.cusum_theta,
    )


def _require_store_extras(db: str) -> None:
    """The database layer's extras, checked before the model loads: SQLAlchemy, and psycopg for PostgreSQL."""
    require_extra("serve", "sqlalchemy")
    if db.startswith(("postgresql", "postgres")):
        require_extra("postgres", "psycopg")


def _recorder_parts(args: argparse.Namespace) -> tuple[Any, DriftConfig, Any]:
    import torch

    from ..detector import Detector
    from ..monitoring.alerts import make_sinks

    if args.threads:
        torch.set_num_threads(args.threads)
    config = drift_config(args)
    det = Detector.load(
        args.model,
        device=args.device,
        batch_size=args.batch_size,
        engine=args.engine,
        allow_legacy=args.allow_legacy_artifact,
    )
    if det.calibration is None:
        raise NotFittedError(f"{args.model}: the detector is not calibrated; monitoring needs its calibration scores")
    sinks = make_sinks(args.webhook, args.alerts_jsonl, timeout=args.webhook_timeout, retries=args.webhook_retries)
    return det, config, sinks


def cmd_serve(args: argparse.Namespace) -> int:
    require_extra("serve", "fastapi", "uvicorn", "prometheus_client")
    _require_store_extras(args.db)
    import uvicorn

    from ..monitoring.service import create_app

    if args.token_all and not args.token:
        raise UsageError("--token-all needs a token (--token or DISCOPATCH_TOKEN)")
    det, config, sinks = _recorder_parts(args)
    app = create_app(
        det,
        args.db,
        drift_config=config,
        alerts=sinks,
        thumbnails=args.thumbnails,
        max_images=args.max_images,
        max_body_bytes=args.max_body_bytes,
        timeout_s=args.timeout or None,
        token=args.token or None,
        token_all=args.token_all,
        max_decodes=args.max_decodes,
    )
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and not args.token:
        print(
            f"warning: listening on {args.host} without --token: anyone who can reach it can post images",
            file=sys.stderr,
        )
    print(f"discopatch serve: {args.model} on http://{args.host}:{args.port} (db {app.state.recorder.store.url})",
          file=sys.stderr)  # fmt: skip
    log_level = args.log_level or ("warning" if args.quiet else "debug" if args.verbose else "info")
    uvicorn.run(app, host=args.host, port=args.port, log_level=log_level, workers=1)
    return EXIT_OK


def cmd_monitor(args: argparse.Namespace) -> int:
    _require_store_extras(args.db)
    from ..monitoring.store import Store, StreamNotFound
    from ..monitoring.streams import StreamRecorder, check_stream_name
    from ..monitoring.watch import Watcher

    check_stream_name(args.stream)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    det, config, sinks = _recorder_parts(args)
    recorder = StreamRecorder(det, Store(args.db), config, sinks, args.thumbnails)
    watcher = Watcher(recorder, args.stream, batch_size=args.batch_size, out=None if args.quiet else sys.stdout)
    try:
        if args.stdin:
            watcher.read_stream(sys.stdin)
        else:
            watcher.watch(args.watch, poll=args.poll, settle=args.settle, once=args.once)
    except KeyboardInterrupt:
        pass
    try:
        summary = watcher.summary() | {"is_drift": recorder.status(args.stream)["is_drift"]}
    except StreamNotFound:
        summary = watcher.summary()
    finally:
        recorder.close()
    print(json.dumps(summary), file=sys.stderr)
    return EXIT_OK


def add_commands(sub: Subcommands) -> None:
    """Register ``serve`` and ``monitor`` on the top-level sub-parsers."""
    _add_serve(sub)
    _add_monitor(sub)


def _add_serve(sub: Subcommands) -> None:
    """``serve``: the shared model, database and drift options, where to listen, and the hardening limits."""
    p = sub.add_parser(
        "serve",
        help="HTTP scoring API with stream drift monitoring and a dashboard",
        epilog=examples(
            "discopatch serve model/ --db sqlite:///monitor.db",
            "DISCOPATCH_TOKEN=secret discopatch serve model/ --host 0.0.0.0 --db postgresql://user@db/discopatch",
            "discopatch serve --config serve.yaml --port 8080      # options from a file, one of them overridden",
        ),
    )
    _add_common(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port")
    p.add_argument("--max-images", type=int, default=256, help="images per request (default 256)")
    g = p.add_argument_group("hardening (see docs/RELIABILITY.md)")
    g.add_argument(
        "--max-body-bytes", type=int, default=64 * 1024 * 1024, help="request body limit (default 64 MiB; 413 above)"
    )
    g.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to decode and score one request (default 120; 0: none)"
    )
    g.add_argument(
        "--token",
        default=os.environ.get("DISCOPATCH_TOKEN"),
        help="bearer token required on POST endpoints (default: $DISCOPATCH_TOKEN; none: open)",
    )
    add_log_format(g)
    g.add_argument(
        "--token-all", action="store_true", help="require the token on every endpoint but /healthz, /livez and /readyz"
    )
    g.add_argument(
        "--max-decodes", type=int, default=2, help="images decoded at once over all requests (bounds memory)"
    )
    p.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: warning with --quiet, debug with --verbose, else info)",
    )
    add_config_options(p)
    p.set_defaults(func=cmd_serve)


def _add_monitor(sub: Subcommands) -> None:
    """``monitor``: the shared options, where the images come from (a watched folder or standard input), the stream."""
    p = sub.add_parser(
        "monitor",
        help="score new files in a folder (or paths on stdin) into a monitored stream",
        description="Each scored image is printed as a JSON line on standard output; --quiet turns those lines off "
        "as well as progress and info log lines.",
        epilog=examples(
            "discopatch monitor model/ --watch incoming/ --stream camera-1 --db sqlite:///monitor.db",
            "find batch/ -name '*.png' | discopatch monitor model/ --stdin --stream nightly",
        ),
    )
    _add_common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--watch", metavar="DIR", help="folder to watch (recursively)")
    src.add_argument("--stdin", action="store_true", help="read image paths from standard input, one per line")
    p.add_argument("--stream", default="default", help="stream name (default: default)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between folder scans (default 2)")
    p.add_argument("--settle", type=float, default=1.0, help="take files unmodified for this long (default 1 s)")
    p.add_argument("--once", action="store_true", help="score what is in the folder now, then exit")
    add_log_format(p)
    p.set_defaults(func=cmd_monitor)
