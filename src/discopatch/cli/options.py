"""What every sub-command shares: the parser and help classes, the option types, the options declared once
(``--device``, ``--engine``, ``--precision``, ``--preset``, the model directory, ``--batch-size``,
``--log-format``, ``--quiet`` / ``--verbose``) and the optional extras.

Imports nothing heavy (no torch, numpy, FastAPI, SQLAlchemy): ``discopatch --help`` loads this module and the area
modules that use it, and every value set offered as ``choices=`` comes from a light module
(:mod:`discopatch.config`, :mod:`discopatch.log`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
from typing import Any

from ..config import ENGINES, MAX_SEED, TORCH_PRECISIONS, TRAIN_AUGMENTS
from ..errors import UsageError
from ..log import LOG_FORMATS
from ..presets import PRESETS

#: Optional extras (pyproject.toml) and the top-level modules each provides; a missing one becomes a one-line hint.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "sqlalchemy", "multipart", "python_multipart", "httpx", "prometheus_client"),
    "onnx": ("onnx", "onnxruntime"),
    "postgres": ("psycopg",),
    "bench": ("matplotlib", "skimage", "mlxtend"),
    "pandas": ("pandas",),
    "ray": ("ray", "pyarrow"),
}
#: The preset names, in the order the help lists them.
PRESET_NAMES: tuple[str, ...] = (
    "small",
    "small-long",
    "small-photo",
    "small-photo-long",
    "paper",
    "small-1x1",
)
assert set(PRESET_NAMES) == set(PRESETS), "a preset is missing from the CLI's list"


class MissingExtra(UsageError, RuntimeError):
    """An optional dependency of the running command is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"missing optional dependency {module!r}; install it with: pip install 'discopatch[{extra}]'")


def extra_of(module: str) -> str | None:
    """The extra that provides top-level ``module`` (``None`` if it is not an optional dependency)."""
    root = module.split(".")[0]
    return next((extra for extra, mods in EXTRAS.items() if root in mods), None)


def require_extra(extra: str, *modules: str) -> None:
    """Import ``modules`` now, so that a missing extra stops a command before any work rather than in the middle."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            raise MissingExtra(module, extra) from None


# ------------------------------------------------------------------------------------------------ option types


def seed_value(text: str) -> int:
    """A seed: an integer from 0 to :data:`~discopatch.config.MAX_SEED` (what torch, numpy and the artefact accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must lie in 0..{MAX_SEED} (2**63 - 1), got {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port must lie in 0..65535, got {text}")
    return value


def ints(text: str) -> tuple[int, ...]:
    """``0,1,2`` -> ``(0, 1, 2)``: comma-separated integers (blank items ignored), at least one."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def positive_ints(text: str) -> tuple[int, ...]:
    """``32,64,128`` -> ``(32, 64, 128)``: comma-separated integers, each at least 1 (widths, sizes, counts)."""
    values = ints(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def names(text: str) -> list[str]:
    """``torch, onnx`` -> ``["torch", "onnx"]``: comma-separated words (blank items ignored)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def betas(text: str) -> tuple[float, float]:
    """``0.5,0.999`` -> Adam's two betas, each in [0, 1)."""
    try:
        b1, b2 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two comma-separated numbers such as 0.5,0.999, got {text!r}"
        ) from None
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise argparse.ArgumentTypeError(f"Adam betas must lie in [0, 1), got {text!r}")
    return b1, b2


# ------------------------------------------------------------------------------------------------ parsers and help

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
    """Every discopatch (sub-)parser: :class:`HelpFormatter` unless told otherwise; the top-level one also holds its
    :class:`Subcommands` (``commands``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.commands: Subcommands | None = None


class Subcommands:
    """The sub-commands of a parser, which every area module's ``add_commands(sub)`` receives.

    It keeps what argparse keeps only in private attributes - each command's parser and its one-line help - so
    that the top-level help can list the commands in its own blocks and ``--config`` can find a command's parser
    before the real parse. argparse's own listing is suppressed: it is given no help to list.
    """

    def __init__(self, parser: Parser) -> None:
        self._action = parser.add_subparsers(
            dest="command", required=True, metavar="COMMAND", parser_class=Parser, help=argparse.SUPPRESS
        )
        self.parsers: dict[str, Parser] = {}
        self.helps: dict[str, str] = {}
        parser.commands = self

    def add_parser(self, name: str, *, help: str, **kwargs: Any) -> Parser:
        """A sub-command's parser (``kwargs`` as for :class:`argparse.ArgumentParser`) with its one-line ``help``."""
        command = self._action.add_parser(name, **kwargs)
        self.parsers[name] = command
        self.helps[name] = help
        return command


def examples(*lines: str) -> str:
    """An epilog of example command lines."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# ------------------------------------------------------------------------------------------------ shared options
# ``p`` is a parser or an argument group: either has ``add_argument``.


def add_model(p: Any) -> None:
    p.add_argument("model", help="detector directory written by 'discopatch fit'")
    add_allow_legacy(p)


def add_allow_legacy(p: Any) -> None:
    """``--allow-legacy-artifact``: the one way to load a detector without a configuration digest."""
    p.add_argument(
        "--allow-legacy-artifact",
        action="store_true",
        help="load a trusted detector saved before detector.json had a configuration digest (refused otherwise, "
        "since edits to such a file cannot be detected); save it again to add one",
    )


def add_device(p: Any) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda[:N] (default: auto)")


def add_engine(p: Any) -> None:
    p.add_argument(
        "--engine",
        default="auto",
        choices=ENGINES,
        help="what runs D: PyTorch or ONNX Runtime (CPU, needs discopatch[onnx]); auto = the measured CPU default",
    )


def add_precision(p: Any) -> None:
    p.add_argument(
        "--precision",
        default="fp32",
        choices=TORCH_PRECISIONS,
        help="bf16: a bfloat16 copy of D's convolutions (statistics in float32), faster where the CPU/GPU has "
        "bf16 units (AUROC check: docs/BENCHMARKS.md)",
    )


def add_preset(p: Any, text: str, default: str | None = "small") -> None:
    p.add_argument("--preset", default=default, choices=PRESET_NAMES, help=text)


def add_batch_size(p: Any) -> None:
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (speed and memory only)")


def add_log_format(p: Any) -> None:
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text", help="format of the discopatch log lines")


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--verbose``, added to every sub-command by :func:`discopatch.cli.app.build_parser` so that
    they mean the same everywhere: they set the level of the ``discopatch`` logger (see :func:`log_level`), and
    ``--quiet`` also turns off progress bars and progress lines. A command's results and its closing summary are
    printed either way."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quiet", action="store_true", help="warnings and errors only: no progress bars or info log lines")
    g.add_argument("--verbose", action="store_true", help="also debug log lines")


def log_level(args: argparse.Namespace) -> int:
    """The ``discopatch`` logger's level: WARNING with ``--quiet``, DEBUG with ``--verbose``, else INFO."""
    if getattr(args, "quiet", False):
        return logging.WARNING
    return logging.DEBUG if getattr(args, "verbose", False) else logging.INFO


def add_lever_options(group: Any) -> None:
    """The optional levers of the adversarial game (``discopatch.training.levers``); unset: the preset's (all off)."""
    group.add_argument("--lr-d", type=float, help="D's own learning rate (default: --lr, as the paper)")
    group.add_argument("--d-steps", type=int, help="D updates per VAE update (default: 1)")
    group.add_argument("--lecam", type=float, help="weight of the LeCam regulariser of D's logits (default: 0, off)")
    group.add_argument(
        "--lr-decay", type=int, metavar="STEPS", help="both learning rates fall to a tenth by this step (default: off)"
    )
    group.add_argument(
        "--d-prior-weight",
        type=float,
        metavar="W",
        help="weight of the prior samples in D's loss, 0 to 1 (default: 0.5, the paper's; 0: D never sees them)",
    )
    group.add_argument(
        "--d-recon-weight",
        type=float,
        metavar="W",
        help="weight of the reconstructions in D's loss, 0 to 1 (default: 0.5, the paper's; 0: D never sees them)",
    )
    group.add_argument(
        "--augment",
        choices=TRAIN_AUGMENTS,
        help="geometric: flips / 90-degree rotations of D's training patches, one per image (default: none)",
    )


def lever_values(args: argparse.Namespace) -> dict[str, Any]:
    """The lever options as ``TrainConfig`` fields (``None``: not given)."""
    return {
        "lr_d": args.lr_d,
        "d_steps": args.d_steps,
        "lecam": args.lecam,
        "augment": args.augment,
        "lr_decay": args.lr_decay,
        "d_prior_weight": args.d_prior_weight,
        "d_recon_weight": args.d_recon_weight,
    }
