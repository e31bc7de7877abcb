"""The ``discopatch`` command line: fit, score, evaluate, demo."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__, cli_config
from .config import ABLATIONS, DEMO_MAX_TIME, DEMO_STEPS, NORM_KINDS, RESIZE_MODES, SCORE_MODES, TRAIN_GROUPINGS
from .engine import ENGINES, TORCH_PRECISIONS
from .log import LOGGER, progress_bar, setup_logging

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2
#: ``fit --amp`` -> the trainer's ``amp`` (``None``: on for CUDA only).
AMP_MODES: dict[str, bool | None] = {"auto": None, "on": True, "off": False}

#: Optional extras (pyproject.toml) and the top-level modules each provides; a missing one becomes a one-line hint.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "sqlalchemy", "multipart", "python_multipart", "httpx", "prometheus_client"),
    "onnx": ("onnx", "onnxruntime"),
    "postgres": ("psycopg",),
    "bench": ("matplotlib", "skimage", "mlxtend"),
    "pandas": ("pandas",),
}


class MissingExtra(RuntimeError):
    """An optional dependency of the running command is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"missing optional dependency {module!r}; install it with: pip install 'discopatch[{extra}]'")


def extra_of(module: str) -> str | None:
    """The extra that provides top-level ``module`` (``None`` if it is not an optional dependency)."""
    root = module.split(".")[0]
    return next((extra for extra, mods in EXTRAS.items() if root in mods), None)


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` now, so that a missing extra stops a command before any work rather than in the middle."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtra(module, extra) from None


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _betas(text: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two comma-separated numbers such as 0.5,0.999, got {text!r}"
        ) from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise argparse.ArgumentTypeError(f"Adam betas must lie in [0, 1), got {text!r}")
    return b1, b2


_STATES_DEFAULT = re.compile(r"\(default\b|\bdefault:", re.IGNORECASE)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the text already states its default, or there is none
    to state (``None``, or an off flag); examples in epilogs keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # identity, not ==: 0 == False, and a default of 0 (e.g. --seed) must still be shown
        off = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if _STATES_DEFAULT.search(text) or off:
            return text
        if not action.option_strings and action.nargs not in ("?", "*"):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every discopatch (sub-)parser: :class:`HelpFormatter` unless told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def examples(*lines: str) -> str:
    """An epilog of example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


#: The top-level help lists these apart from the everyday commands.
EVALUATION_COMMANDS = ("benchmark", "attack", "bench-speed")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default: auto)")


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose``, added to every sub-command by :func:`build_parser` so that they mean the same
    everywhere: they set the level of the ``discopatch`` logger (see :func:`log_level`), and ``--quiet`` also turns
    off progress bars and progress lines. A command's results and its closing summary are printed either way."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="warnings and errors only: no progress bars or info log lines")
    g.add_argument("--verbose", action="store_true", help="also debug log lines")


def log_level(args: argparse.Namespace) -> int:
    """The ``discopatch`` logger's level: WARNING with ``--quiet``, DEBUG with ``--verbose``, else INFO."""
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", False) else logging.INFO


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="discopatch")
    parser.add_argument("--version", action="version", version=f"discopatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser(
        "fit",
        help="train a detector on a folder of in-distribution images",
        epilog=examples(
            "discopatch fit id_images/ --out model/ --max-time 1800",
            "discopatch fit id_images/ --out model/ --resume            # continue after an interruption",
            "discopatch fit photos/ --out model/ --channels 3 --score d-only",
            "discopatch fit --config fit.yaml --max-time 600    # options from a file, one of them overridden",
            "discopatch fit id_images/ --out model/ --print-config > fit.yaml",
        ),
    )
    p.add_argument("images", help="folder of ID images (searched recursively)")
    p.add_argument("--out", required=True, help="directory to write the detector to")
    p.add_argument(
        "--preset",
        default="small",
        choices=["small", "paper", "small-1x1"],
        help="small: CPU scale model of the paper (64 px images, 32 px patches); paper: DisCoPatch-64; small-1x1: "
        "the previous small preset, an ablation (default: small)",
    )
    p.add_argument(
        "--channels",
        default="auto",
        choices=["auto", "1", "3"],
        help="1 = gray, 3 = RGB, auto = from the images",
    )
    p.add_argument("--epochs", type=int, help="epochs over the training split (default: the preset's)")
    p.add_argument(
        "--max-steps",
        type=int,
        help="stop after this many training steps in all (default: the preset's; small: 1380, where its learning "
        "curve peaks - docs/BENCHMARKS.md)",
    )
    p.add_argument(
        "--max-time", type=float, help="stop training after this many seconds (default: the preset's; small: 1200)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of training, the split and the test patch positions")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate of the threshold (default 0.05)")
    p.add_argument("--val-fraction", type=float, help="share of images held out for calibration (default 0.1)")
    g = p.add_argument_group("overrides (default: the preset's)")
    g.add_argument("--image-size", type=int, help="side of the square every image is resized to, in pixels")
    g.add_argument("--resize", choices=RESIZE_MODES, help="how a non-square image becomes square")
    g.add_argument("--patch-size", type=int, help="side of D's square patches, in pixels")
    g.add_argument("--widths", type=_widths, help="channels of D's (and the VAE's) conv blocks, e.g. 32,64,128,256")
    g.add_argument("--latent-dim", type=int, help="VAE latent size")
    g.add_argument(
        "--norm",
        choices=NORM_KINDS,
        help="D's normalisation; patch = per-image batch statistics (the method); others are ablations",
    )
    g.add_argument("--batch-images", type=int, help="images per training step")
    g.add_argument("--train-patches", type=int, help="random patches per image in training")
    g.add_argument("--test-patches", type=int, help="patches per image when scoring")
    g.add_argument("--lr", type=float, help="Adam learning rate of both networks")
    g.add_argument("--w-kl", type=float, help="weight of the VAE's KL term")
    g.add_argument("--w-adv", type=float, help="weight of the VAE's adversarial terms")
    g.add_argument(
        "--grouping",
        choices=TRAIN_GROUPINGS,
        help="training normalisation groups: the whole batch (domain, paper preset) or one image (image, small preset)",
    )
    g.add_argument("--ema", type=float, help="EMA decay of D's weights kept as the detector (0 = off)")
    g.add_argument("--no-first-norm", action="store_true", help="no normalisation in D's first layer")
    g.add_argument("--betas", type=_betas, help="Adam betas of both optimisers, e.g. 0.5,0.999 (paper: 0.9,0.999)")
    g.add_argument(
        "--ablation",
        choices=ABLATIONS,
        help="allow a configuration that is refused otherwise, recorded in the detector as a named ablation",
    )
    g.add_argument(
        "--score",
        choices=SCORE_MODES,
        help="d-only: the paper's 1 - mean D; fused: also score the per-image statistics the normalisation removes",
    )
    g = p.add_argument_group("speed and scale (see docs/BENCHMARKS.md; torchrun runs DistributedDataParallel)")
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="memory layout of D and the VAE while training (default: channels_last, 1.3x faster on CPU)",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the two update steps (slow first steps)")
    g.add_argument("--amp", choices=list(AMP_MODES), default="auto", help="bf16 autocast (auto: on for CUDA)")
    _add_device(p)
    cli_config.add_config_options(p)

    p = sub.add_parser(
        "score",
        help="score image files or folders",
        epilog=examples(
            "discopatch score model/ new_images/ more.jpg --out scores.csv",
            "discopatch score model/ big_folder/ --out scores.jsonl --resume",
            "discopatch score model/ suspicious.png --heatmaps maps/",
        ),
    )
    p.add_argument("model", help="detector directory written by 'discopatch fit'")
    p.add_argument("paths", nargs="+", help="image files and/or folders")
    p.add_argument("--out", help="write rows to FILE.csv or FILE.jsonl (default: CSV on standard output)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (speed and memory only)")
    p.add_argument(
        "--resume", action="store_true", help="keep the rows already in --out, append only the files missing from it"
    )
    p.add_argument(
        "--engine",
        default="auto",
        choices=ENGINES,
        help="what runs D: PyTorch or ONNX Runtime (CPU, needs discopatch[onnx]); auto = the measured CPU default",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=TORCH_PRECISIONS,
        help="bf16: a bfloat16 copy of D's convolutions (statistics in float32), faster where the CPU/GPU has "
        "bf16 units (AUROC check: docs/BENCHMARKS.md)",
    )
    p.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="also write one PNG per readable image to DIR: D's per-patch contributions over the image as the "
        "model sees it (red = fake-like, blue = real-like); adds a heatmap column. Explains D's share only, "
        "not the per-image statistics of a fused score (see README)",
    )
    _add_device(p)

    p = sub.add_parser(
        "evaluate",
        help="AUROC / FPR@95 / AUPR of ID vs OOD folders",
        epilog=examples(
            "discopatch evaluate model/ --id held_out_id/ --ood blur=blurred/ --ood other=other_set/",
            "discopatch evaluate model/ --id-list id.txt --ood near=near.txt --data-root /data --json eval.json",
        ),
    )
    p.add_argument("model", help="detector directory written by 'discopatch fit'")
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
    p.add_argument("--engine", default="auto", choices=ENGINES, help="what runs D (see 'score')")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON")
    p.add_argument(
        "--report",
        metavar="FILE.html",
        help="also write a self-contained HTML report: ROC curves, score histograms with the threshold, the share "
        "flagged, bootstrap 95 %% confidence intervals of each AUROC (needs discopatch[bench])",
    )
    _add_device(p)

    p = sub.add_parser(
        "demo",
        help="train, calibrate and evaluate on the bundled Fashion-MNIST data",
        epilog=examples("discopatch demo --out demo-out", "discopatch demo --max-steps 100 --seed 1"),
    )
    p.add_argument("--out", default="demo-out", help="output directory (model under OUT/model)")
    p.add_argument("--max-steps", type=int, default=DEMO_STEPS, help="training steps")
    p.add_argument("--max-time", type=float, default=DEMO_MAX_TIME, help="cap on training time in seconds")
    p.add_argument("--seed", type=int, default=0, help="seed of training and the test patch positions")
    _add_device(p)

    import importlib

    for module in COMMAND_GROUPS:
        importlib.import_module(module).add_commands(sub)
    for command in dict.fromkeys(sub.choices.values()):  # each parser once, even under several names
        add_verbosity(command)
    parser.description = _command_overview(sub)
    parser.usage = "discopatch [-h] [--version] COMMAND ..."
    return parser


def _command_overview(sub: argparse._SubParsersAction) -> str:
    """The top-level description: everyday commands, then the evaluation commands, each with its one-line help.

    argparse lists all sub-commands in one block; they are listed here in two instead and that block is hidden.
    """
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    sub.help = argparse.SUPPRESS
    sub._choices_actions = []  # the listing above replaces argparse's single block

    def block(names: list[str]) -> str:
        return "\n".join(f"  {n:<12} {helps[n]}" for n in names)

    everyday = [n for n in sub.choices if n not in EVALUATION_COMMANDS]
    evaluation = [n for n in sub.choices if n in EVALUATION_COMMANDS]
    return (
        "DisCoPatch: detect out-of-distribution and covariate-shifted images from ID images only.\n\n"
        f"commands:\n{block(everyday)}\n\n"
        f"evaluation and benchmarking:\n{block(evaluation)}\n\n"
        "'discopatch COMMAND --help' shows a command's options, defaults and examples."
    )


def _detect_channels(folder: str, limit: int = 64) -> int:
    """3 if any of the first ``limit`` images has colour, else 1."""
    from PIL import Image

    from .data.images import list_images

    for path in list_images(folder)[:limit]:
        try:
            with Image.open(path) as im:
                if im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
                    if im.mode == "P" and not _palette_has_colour(im):
                        continue
                    return 3
        except Exception:
            continue
    return 1


def _palette_has_colour(im: Any) -> bool:
    rgb = im.convert("RGB")
    r, g, b = rgb.split()
    return r.tobytes() != g.tobytes() or g.tobytes() != b.tobytes()


def cmd_fit(args: argparse.Namespace) -> int:
    from .config import get_preset

    channels = _detect_channels(args.images) if args.channels == "auto" else int(args.channels)
    preset = get_preset(args.preset, channels)
    model_kw = {
        k: v
        for k, v in {
            "patch_size": args.patch_size,
            "widths": args.widths,
            "latent_dim": args.latent_dim,
            "norm": args.norm,
            "norm_first_layer": False if args.no_first_norm else None,
            "ablation": args.ablation,
        }.items()
        if v is not None
    }
    pre_kw = {k: v for k, v in {"image_size": args.image_size, "resize": args.resize}.items() if v is not None}
    train_kw = {
        k: v
        for k, v in {
            "batch_images": args.batch_images,
            "train_patches": args.train_patches,
            "lr": args.lr,
            "w_kl": args.w_kl,
            "w_adv": args.w_adv,
            "grouping": args.grouping,
            "ema": args.ema,
            "betas": args.betas,
        }.items()
        if v is not None
    }
    preset = preset.replace(
        model=dataclasses.replace(preset.model, **model_kw),
        preprocess=dataclasses.replace(preset.preprocess, **pre_kw),
    )
    if args.score is not None:
        preset = preset.replace(score_mode=args.score)
    if preset.preprocess.image_size < preset.model.patch_size:
        raise ValueError(
            f"image size {preset.preprocess.image_size} is smaller than patch size {preset.model.patch_size}"
        )
    out = Path(args.out)
    from .distributed import cleanup, init_from_env, launched_by_torchrun

    distributed = launched_by_torchrun()
    device = str(init_from_env(args.device)) if distributed else args.device
    try:
        return _fit_and_save(args, preset, train_kw, channels, out, device, distributed)
    finally:
        if distributed:
            cleanup()


def _fit_and_save(
    args: argparse.Namespace, preset: Any, train_kw: dict[str, Any], channels: int, out: Path, device: str, ddp: bool
) -> int:
    """The body of ``fit``; under torchrun every rank trains and rank 0 alone reports and saves."""
    from .detector import Detector
    from .distributed import is_main_process, rank_and_world

    det = Detector(preset, device=device, seed=args.seed, test_patches=args.test_patches)
    det.run_config = getattr(args, "run_config", None)
    main = is_main_process()
    if main:
        print(
            f"discopatch {__version__}: preset {preset.name}, {channels} channel(s), "
            f"{preset.preprocess.image_size} px images, {preset.model.patch_size} px patches, device {det.device}",
            file=sys.stderr,
        )
    if ddp and main:
        k, b = rank_and_world()[1], args.batch_images or preset.train.batch_images
        tp = args.train_patches or preset.train.train_patches
        print(
            f"DistributedDataParallel over {k} processes: each step trains on {k} x {b} images x {tp} patches "
            f"= {k * b * tp} real patches; normalisation statistics stay per rank and per domain ({b * tp} patches)",
            file=sys.stderr,
        )
    det.fit(
        args.images,
        epochs=args.epochs,
        max_time=args.max_time,
        max_steps=args.max_steps,
        val_fraction=args.val_fraction,
        target_fpr=args.target_fpr,
        checkpoint_dir=out / "checkpoints",
        resume=args.resume,
        progress=not args.quiet,
        channels_last=args.channels_last,
        compile=args.compile,
        amp=AMP_MODES[args.amp],
        **train_kw,
    )
    if not main:
        return EXIT_OK
    det.save(out)
    info = det.training_info
    print(
        f"trained {info['steps']} steps in {info['train_seconds']:.0f} s ({info['stop_reason']}); "
        f"{info['n_train_images']} train / {info['n_val_images']} calibration images"
        + (f"; {info['n_unreadable']} unreadable skipped" if info["n_unreadable"] else ""),
        file=sys.stderr,
    )
    if det.calibration is not None:
        print(
            f"threshold {det.calibration.threshold:.6g} at {det.calibration.target_fpr:.1%} FPR",
            file=sys.stderr,
        )
    else:
        print(
            "no validation images: the detector is not calibrated (run with --val-fraction > 0)",
            file=sys.stderr,
        )
    print(f"saved detector to {out}", file=sys.stderr)
    return EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from .data.images import expand_paths, utf8_text
    from .detector import Detector

    det = Detector.load(
        args.model, device=args.device, batch_size=args.batch_size, engine=args.engine, precision=args.precision
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
    if args.resume:
        if out_path is None:
            raise ValueError("--resume needs --out FILE")
        done = _rows_written(out_path, jsonl, fields)
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
        + (f"; {len(done)} already in {out_path}, skipped" if done else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED_INPUTS if n_fail else EXIT_OK


def _write_heatmap(directory: Path, path: str, explanation: Any) -> str | None:
    """Write one overlay named after the file plus a hash of its full path (equal names in two folders differ)."""
    if explanation is None:
        return None
    import hashlib

    from .explain import save_overlay

    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
    target = directory / f"{Path(path).stem[:100]}-{digest}.png"
    save_overlay(explanation, str(target))
    return str(target)


def _rows_written(out_path: Path, jsonl: bool, fields: list[str]) -> set[str]:
    """Paths already in ``out_path``; a partly written last line (the run was killed mid-write) is cut off first."""
    if not out_path.exists():
        return set()
    data = out_path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # everything up to the last complete line
    text = keep.decode("utf-8")
    if jsonl:
        done = {json.loads(line)["path"] for line in text.splitlines() if line.strip()}
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
    keep = text.encode("utf-8")
    if len(keep) != len(data):
        with open(out_path, "r+b") as f:
            f.truncate(len(keep))
    return done


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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .evaluation import evaluate, parse_named_dir

    if args.report:
        require_extra("bench", "matplotlib")
    if not args.id_dir and not args.id_list:
        raise ValueError("give the ID set with --id DIR or --id-list FILE")
    if not args.ood and not args.imagenet_c:
        raise ValueError("give at least one --ood NAME=DIR|LIST or --imagenet-c DIR")
    all_folders = all(Path(parse_named_dir(s)[1]).is_dir() for s in args.ood)
    det = Detector.load(args.model, device=args.device, engine=args.engine)
    if args.id_list or args.imagenet_c or args.official_pipeline or not all_folders:
        from .reproduce import evaluate_args

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
        from .benchmark.report import write_evaluation_report

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


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        args.out,
        max_time=args.max_time,
        max_steps=args.max_steps,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    return EXIT_OK


COMMANDS = {"fit": cmd_fit, "score": cmd_score, "evaluate": cmd_evaluate, "demo": cmd_demo}

#: Other areas register their sub-commands here: each module has ``add_commands(subparsers)`` whose parsers call
#: ``set_defaults(func=...)``. Imported lazily so heavy optional dependencies load only for their command.
COMMAND_GROUPS: list[str] = ["discopatch.deploy_cli", "discopatch.monitoring.cli", "discopatch.benchmark.cli"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; a sub-command with ``--config FILE`` first takes that file's values as its defaults
    (see :mod:`discopatch.cli_config`), and its resolved configuration is kept as ``args.run_config``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = sub.choices.get(argv[0]) if argv else None
    if command is None or not cli_config.has_config_options(command):
        return parser.parse_args(argv)
    path = cli_config.config_path(argv[1:])
    originals: dict[str, Any] = {}
    if path is not None:
        try:
            originals = cli_config.apply_config(command, path)
        except cli_config.ConfigError as e:
            command.error(str(e))
    args = parser.parse_args(argv)
    cli_config.settle_exclusive(command, args, originals)
    args.run_config = cli_config.resolved_config(command, args)
    args.config_omitted = [k for k in cli_config.SECRETS if k in cli_config.config_keys(command)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(level=log_level(args), fmt=getattr(args, "log_format", "text"))
    shown = {
        k: v for k, v in vars(args).items() if k not in (*cli_config.SECRETS, "func", "run_config", "config_omitted")
    }
    LOGGER.debug("discopatch %s %s with %s", __version__, args.command, shown)
    if getattr(args, "print_config", False):
        fmt = cli_config.config_format(args.config) if args.config else "yaml"
        sys.stdout.write(cli_config.dump_config(args.run_config, fmt, args.command, args.config_omitted))
        return EXIT_OK
    try:
        func = getattr(args, "func", None) or COMMANDS[args.command]
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        extra = extra_of(e.name or "")
        if extra is None:
            raise
        print(f"discopatch {args.command}: error: {MissingExtra(e.name or '', extra)}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"discopatch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
