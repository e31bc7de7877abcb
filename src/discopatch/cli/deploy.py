"""``discopatch export`` and ``discopatch bench-speed``: deployment commands.

onnx / onnxruntime and torch are imported only when these commands run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED_INPUTS, EXIT_OK, InputNotFoundError, UsageError
from .options import Subcommands, add_allow_legacy, add_model, add_preset, examples, names, positive_ints, require_extra


def add_commands(sub: Subcommands) -> None:
    _add_export(sub)
    _add_bench_speed(sub)


def _add_export(sub: Subcommands) -> None:
    """``export``: the detector, the file to write and the parity check against PyTorch."""
    p = sub.add_parser(
        "export",
        help="export the discriminator to ONNX (per-image normalisation as explicit ops)",
        epilog=examples(
            "discopatch export model/ --out model.onnx --check",
            "discopatch export model/ --out model.onnx --check --check-images my_id_images/",
        ),
    )
    add_model(p)
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--out", required=True, help="FILE.onnx to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument(
        "--check",
        action="store_true",
        help="score real images with ONNX Runtime and PyTorch; fail if they differ by more than 0.005 of the "
        "calibration scores' spread (interquartile range) or disagree on a decision outside that rounding band",
    )
    p.add_argument("--check-images", help="folder of images for --check (default: the bundled Fashion-MNIST test set)")
    p.add_argument("--check-limit", type=int, default=256, help="at most this many images for --check")
    p.set_defaults(func=cmd_export)


def _add_bench_speed(sub: Subcommands) -> None:
    """``bench-speed``: what to measure (a detector or a preset's untrained D), the grid of batch sizes, threads,
    engines and precisions, and the ``--train`` and ``--pipeline`` runs."""
    p = sub.add_parser(
        "bench-speed",
        help="images/s, ms/image and achieved GFLOP/s against a measured matmul peak",
        epilog=examples(
            "discopatch bench-speed                       # an untrained small-preset D",
            "discopatch bench-speed model/ --threads 1,2 --engines torch,onnx --json speed.json",
            "discopatch bench-speed model/ --check-precision",
            "discopatch bench-speed --train --threads 1          # training steps/s, FLOPs, per-part split",
            "discopatch bench-speed --pipeline --preset paper --precision fp32,bf16 --score-images 8",
        ),
    )
    p.add_argument("model", nargs="?", help="detector directory (default: an untrained D of --preset)")
    add_allow_legacy(p)
    add_preset(p, "D's preset when no MODEL is given")
    p.add_argument("--channels", type=int, choices=[1, 3], help="for --preset (default: the preset's)")
    p.add_argument("--batch-sizes", type=positive_ints, help="images per call (default 1,4,16,64,256; paper: 1,4,16)")
    p.add_argument("--threads", type=positive_ints, default=[1, 2], help="CPU thread counts to measure, e.g. 1,2")
    p.add_argument("--engines", type=names, default=["torch", "onnx"], help="torch and/or onnx")
    p.add_argument("--precision", type=names, default=["fp32"], help="fp32, bf16 (torch) and/or int8 (onnx)")
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch engine memory layout (default: the engine's, channels_last)",
    )
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of repeats per measurement (default 1)")
    p.add_argument("--max-reps", type=int, default=20, help="at most this many repeats per measurement")
    p.add_argument(
        "--check-precision",
        action="store_true",
        help="MODEL only: AUROC of bf16 and int8 vs fp32 on the bundled demo sets (must stay within 0.001)",
    )
    _add_train_and_pipeline(p)
    p.add_argument("--json", dest="json_out", help="write the results as JSON")
    p.add_argument("--markdown", help="write the table as Markdown")
    p.set_defaults(func=cmd_bench_speed)


def _add_train_and_pipeline(p: argparse.ArgumentParser) -> None:
    """bench-speed's two other measurements: training (``--train``) and the scoring pipeline (``--pipeline``)."""
    p.add_argument(
        "--train",
        action="store_true",
        help="training instead: fp32 peaks (matmul, the preset's convolutions), FLOPs of one step, steps/s, time "
        "per part of a step; then scoring images/s from files, from arrays, and the decode / D+statistics limit",
    )
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="the scoring figures of --train alone (from files, from arrays, decode, D+statistics, their limit) for "
        "each --engines x --precision, timed in turns",
    )
    p.add_argument("--steps", type=int, default=10, help="--train: timed steps per thread count (default 10)")
    p.add_argument("--score-images", type=int, default=256, help="--train, --pipeline: images for the scoring figures")


def _load_images(folder: str | None, limit: int) -> Any:
    if folder is None:
        return None
    from ..data.images import list_images

    files = list_images(folder)[:limit]
    if not files:
        raise InputNotFoundError(f"no images found under {folder}")
    return files


def cmd_export(args: argparse.Namespace) -> int:
    require_extra("onnx", "onnx", "onnxruntime")
    from ..detector import Detector
    from ..inference.export import check_export, export_detector

    det = Detector.load(args.model, device="cpu", engine="torch", allow_legacy=args.allow_legacy_artifact)
    out = export_detector(det, args.out, opset=args.opset)
    print(
        f"wrote {out}: input 'patches' (images, {det.n_patches}, {det.model_config.channels}, "
        f"{det.model_config.patch_size}, {det.model_config.patch_size}), outputs 'logits' (images, "
        f"{det.n_patches}), 'stats' (images, {det.model_config.stats_dim}) and 'score' (images,) "
        "in float32; "
        f"score = the detector's {det.preset.score_mode!r} score",
        file=sys.stderr,
    )
    if not args.check:
        return EXIT_OK
    images = _load_images(args.check_images, args.check_limit)
    check = check_export(det, out, images, limit=args.check_limit)
    print(f"check: {check.summary()}")
    return EXIT_OK if check.ok else EXIT_FAILED_INPUTS


def cmd_bench_train(args: argparse.Namespace) -> int:
    """``bench-speed --train``: training and scoring against limits measured in the same run."""
    import torch

    from ..detector import Detector
    from ..presets import get_preset
    from ..training.speed import bench_scoring, bench_training

    if args.model:
        det = Detector.load(args.model, device="cpu", allow_legacy=args.allow_legacy_artifact)
        preset = det.preset
    else:
        preset = get_preset(args.preset, args.channels)
        det = _untrained_detector(preset)
    reports = []
    for th in args.threads:
        rep = bench_training(preset, th, steps=args.steps, min_time=args.min_time)
        old = torch.get_num_threads()
        torch.set_num_threads(th)
        try:
            rep.scoring = bench_scoring(det, args.score_images, args.min_time, args.max_reps)
        finally:
            torch.set_num_threads(old)
        print(rep.table() + "\n")
        reports.append(rep)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([r.to_dict() for r in reports], indent=2))
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(r.markdown() for r in reports) + "\n")
    return EXIT_OK


def _bench_train_or_pipeline(args: argparse.Namespace) -> int:
    if args.check_precision or (args.train and args.pipeline):
        raise UsageError("--check-precision, --train and --pipeline are separate runs")
    return cmd_bench_train(args) if args.train else cmd_bench_pipeline(args)


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    """``bench-speed --pipeline``: the scoring pipeline's figures per engine and precision, all timed in turns."""
    import torch

    from ..detector import Detector
    from ..presets import get_preset
    from ..training.speed import bench_pipelines, matmul_peak, pipeline_markdown

    combos = [
        (e, p) for e in args.engines for p in args.precision if (e, p) not in (("torch", "int8"), ("onnx", "bf16"))
    ]
    preset = None if args.model else get_preset(args.preset, args.channels)
    runs: list[dict[str, Any]] = []
    old = torch.get_num_threads()
    try:
        for th in args.threads:
            torch.set_num_threads(th)  # before the detectors: an ONNX engine takes the thread count it is built at
            dets = {
                f"{e}/{p}": Detector.load(
                    args.model, device="cpu", engine=e, precision=p, allow_legacy=args.allow_legacy_artifact
                )
                if args.model
                else _untrained_detector(preset, e, p)
                for e, p in combos
            }
            dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
            peaks = {p: matmul_peak(min_time=args.min_time, dtype=dtypes[p]) for p in args.precision if p in dtypes}
            rows = bench_pipelines(dets, args.score_images, args.min_time, args.max_reps)
            runs.append({"threads": th, "peaks": peaks, "rows": rows})
    finally:
        torch.set_num_threads(old)
    name = args.model or args.preset
    md = (
        f"{name}, {args.score_images} PNG files, ms per image (matmul peaks in GFLOP/s: "
        + "; ".join(
            f"{r['threads']} thread(s) " + ", ".join(f"{k} {v:.1f}" for k, v in r["peaks"].items()) for r in runs
        )
        + ")\n\n"
        + pipeline_markdown(runs)
    )
    print(md)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(runs, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    return EXIT_OK


def _untrained_detector(preset: Any, engine: Any = "auto", precision: Any = "fp32") -> Any:
    """A detector with an untrained D of ``preset`` (seed 0) and, for a fused score, statistics fitted on the demo
    garments: scoring costs the same whatever the weights are."""
    import numpy as np
    import torch

    from ..data.images import preprocess
    from ..detector import Detector
    from ..inference.speed import synthetic_png_inputs
    from ..model import Discriminator

    torch.manual_seed(0)
    det = Detector(preset, device="cpu", engine=engine, precision=precision)
    det.discriminator = Discriminator(preset.model).eval()
    if preset.score_mode != "d-only":
        stack = np.stack([preprocess(x, preset.preprocess) for x in synthetic_png_inputs(preset.preprocess, 256)])
        det.fit_statistics(stack[:192], stack[192:])
    return det


def cmd_bench_speed(args: argparse.Namespace) -> int:
    import torch

    if args.train or args.pipeline:
        return _bench_train_or_pipeline(args)

    from ..inference.speed import bench_speed, precision_check
    from ..model import Discriminator
    from ..presets import get_preset

    if args.model:
        from ..detector import Detector

        det = Detector.load(args.model, device="cpu", engine="torch", allow_legacy=args.allow_legacy_artifact)
        D, pre, n, seed, name = det.require_model(), det.preprocess_config, det.n_patches, det.seed, args.model
    else:
        if args.check_precision:
            raise UsageError("--check-precision needs a trained MODEL (an untrained D has no meaningful AUROC)")
        preset = get_preset(args.preset, args.channels)
        torch.manual_seed(0)
        D, pre, n, seed, name = Discriminator(preset.model), preset.preprocess, preset.test_patches, 0, preset.name
    sizes = args.batch_sizes or ([1, 4, 16] if D.cfg.patch_size >= 64 else [1, 4, 16, 64, 256])
    report = bench_speed(
        D,
        pre,
        n,
        preset_name=name,
        seed=seed,
        batch_sizes=sizes,
        threads=args.threads,
        engines=args.engines,
        precisions=args.precision,
        channels_last=args.channels_last,
        min_time=args.min_time,
        max_reps=args.max_reps,
        log=lambda s: print(s, file=sys.stderr),
    )
    print(report.table())
    out: dict[str, Any] = report.to_dict()
    md = report.markdown()
    if args.check_precision:
        out["precision_check"], table, md_table = _precision_report(precision_check(det))
        print(table)
        md += md_table
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    return EXIT_OK


def _precision_report(checks: list[Any]) -> tuple[list[dict[str, Any]], str, str]:
    """``--check-precision``'s results three ways: JSON rows, the printed table and the Markdown table."""
    lines = ["", "precision  engine  max |dAUROC| vs fp32  max |dscore|  within 0.001"]
    for c in checks:
        lines.append(
            f"{c.precision:9s}  {c.engine:6s}  {c.max_abs_delta:19.5f}  {c.max_score_delta:12.3g}  "
            f"{'yes' if c.passed else 'no'}"
        )
    md = "\n\n| precision | engine | max abs AUROC change vs fp32 | within 0.001 |\n|---|---|---|---|\n"
    md += "\n".join(
        f"| {c.precision} | {c.engine} | {c.max_abs_delta:.5f} | {'yes' if c.passed else 'no'} |" for c in checks
    )
    return [c.__dict__ for c in checks], "\n".join(lines), md
