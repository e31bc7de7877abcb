"""``discopatch evaluate``: AUROC / FPR@95 / AUPR of an ID set against OOD sets (folders, image lists,
ImageNet-C), optionally with an HTML report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_OK, UsageError
from .options import Subcommands, add_device, add_engine, add_model, examples, require_extra

if TYPE_CHECKING:  # the library loads inside the command, so --help stays light
    from ..detector import Detector
    from ..evaluation.evaluate import EvaluationResult


def add_commands(sub: Subcommands) -> None:
    p = sub.add_parser(
        "evaluate",
        help="AUROC / FPR@95 / AUPR of ID vs OOD folders",
        epilog=examples(
            "discopatch evaluate model/ --id held_out_id/ --ood blur=blurred/ --ood other=other_set/",
            "discopatch evaluate model/ --id-list id.txt --ood near=near.txt --data-root /data --json eval.json",
        ),
    )
    add_model(p)
    p.add_argument("--id", dest="id_dir", help="folder of held-out ID images")
    p.add_argument("--id-list", help="ID image list (OpenOOD style: 'relative/path [label]' per line)")
    p.add_argument("--data-root", help="folder the image lists' paths are relative to (default: each list's folder)")
    p.add_argument(
        "--list-root", action="append", default=[], metavar="NAME=DIR", help="data root for one list (repeatable)"
    )
    p.add_argument(
        "--ood", action="append", default=[], metavar="NAME=DIR|LIST", help="an OOD folder or image list (repeatable)"
    )
    p.add_argument("--imagenet-c", metavar="DIR", help="ImageNet-C root: every corruption/severity folder is a set")
    p.add_argument(
        "--official-pipeline",
        action="store_true",
        help="mimic the official code's differing ID/OOD preprocessing (NOT leak-free; for reproducing the paper)",
    )
    add_engine(p)
    p.add_argument("--json", dest="json_out", help="also write the results as JSON")
    p.add_argument(
        "--report",
        metavar="FILE.html",
        help="also write a self-contained HTML report: ROC curves, score histograms with the threshold, the share "
        "flagged, bootstrap 95 %% confidence intervals of each AUROC (needs discopatch[bench])",
    )
    add_device(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..detector import Detector
    from ..evaluation.evaluate import evaluate, parse_named_dir

    if args.report:
        require_extra("bench", "matplotlib")
    if not args.id_dir and not args.id_list:
        raise UsageError("give the ID set with --id DIR or --id-list FILE")
    if not args.ood and not args.imagenet_c:
        raise UsageError("give at least one --ood NAME=DIR|LIST or --imagenet-c DIR")
    all_folders = all(Path(parse_named_dir(s)[1]).is_dir() for s in args.ood)
    det = Detector.load(args.model, device=args.device, engine=args.engine, allow_legacy=args.allow_legacy_artifact)
    if args.id_list or args.imagenet_c or args.official_pipeline or not all_folders:
        res = evaluate_args(det, args)
        print(f"pipeline: {res.meta['pipeline']}")
    else:
        ood = dict(parse_named_dir(s) for s in args.ood)
        res = evaluate(det, args.id_dir, ood, id_name=Path(args.id_dir).name or "id", progress=not args.quiet)
    if args.report:
        res.add_auroc_ci()
    print(res.table())
    print(_judged_by(res))
    for name, errs in res.unreadable.items():
        if errs:
            print(
                f"warning: {len(errs)} unreadable file(s) skipped in {name}, first: {errs[0][1]}",
                file=sys.stderr,
            )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(res.to_dict(), indent=2))
    if args.report:
        from ..benchmark.report import write_evaluation_report

        write_evaluation_report(res, Path(args.report), model=str(args.model))
    return EXIT_OK


def _judged_by(res: Any) -> str:
    """The line under the table naming the detector and the threshold its ``flagged`` column is taken at."""
    meta = res.meta
    if meta.get("n_calibration") is None:
        return f"model {meta.get('model_id')}: not calibrated, so nothing is flagged"
    thr = "infinite (too few calibration images)" if meta["threshold"] is None else f"{meta['threshold']:.6g}"
    return (
        f"model {meta['model_id']}: threshold {thr} at {meta['target_fpr']:.1%} target FPR; "
        f"flagged {res.id_flagged:.1%} of the ID set"
    )


def evaluate_args(det: Detector, args: argparse.Namespace) -> EvaluationResult:
    """``discopatch evaluate`` with image lists, ImageNet-C or ``--official-pipeline`` (streamed scoring:
    :mod:`discopatch.evaluation.reproduce`); returns the :class:`~discopatch.evaluation.evaluate.EvaluationResult`,
    which the command prints and writes."""
    from ..evaluation.evaluate import parse_named_dir
    from ..evaluation.reproduce import (
        evaluate_sources,
        folder_source,
        imagenet_c_sources,
        list_source,
        source_from_spec,
    )

    roots = dict(parse_named_dir(s) for s in getattr(args, "list_root", []))
    if args.id_list:
        id_src = list_source(Path(args.id_list).stem, args.id_list, args.data_root, kind="id")
    else:
        id_src = folder_source(Path(args.id_dir).name or "id", args.id_dir, kind="id")
    oods = [source_from_spec(spec, args.data_root, roots=roots) for spec in args.ood]
    if args.imagenet_c:
        oods += imagenet_c_sources(args.imagenet_c)
    return evaluate_sources(
        det, id_src, oods, official=args.official_pipeline, progress=not getattr(args, "quiet", False)
    )
