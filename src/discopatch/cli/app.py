"""The ``discopatch`` parser and entry point: every area module registers its sub-commands, ``main`` runs the
chosen one and turns the errors it raises into exit codes (:mod:`discopatch.errors`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNEXPECTED, ConfigError, DiscopatchError
from ..log import LOGGER, setup_logging
from . import benchmark, config_files, demo, deploy, evaluate, monitoring, score, train
from .options import MissingExtra, Parser, Subcommands, add_verbosity, extra_of, log_level

#: The areas in the order their commands are listed; each has ``add_commands(subparsers)``, whose parsers call
#: ``set_defaults(func=...)``. Their modules import nothing heavy at the top, so building the parser stays cheap.
AREAS = (train, score, evaluate, demo, deploy, monitoring, benchmark)
#: The top-level help lists these apart from the everyday commands.
EVALUATION_COMMANDS = ("benchmark", "attack", "bench-speed")


def build_parser() -> Parser:
    """The ``discopatch`` parser; its sub-commands are in ``parser.commands`` (:class:`~.options.Subcommands`)."""
    parser = Parser(prog="discopatch")
    parser.add_argument("--version", action="version", version=f"discopatch {__version__}")
    sub = Subcommands(parser)
    for area in AREAS:
        area.add_commands(sub)
    for command in sub.parsers.values():
        add_verbosity(command)
    parser.description = _command_overview(sub)
    parser.usage = "discopatch [-h] [--version] COMMAND ..."
    return parser


def _command_overview(sub: Subcommands) -> str:
    """The top-level description: everyday commands, then the evaluation commands, each with its one-line help
    (argparse would list them all in one block; it lists none, see :class:`~.options.Subcommands`)."""

    def block(names: list[str]) -> str:
        return "\n".join(f"  {n:<12} {sub.helps[n]}" for n in names)

    everyday = [n for n in sub.parsers if n not in EVALUATION_COMMANDS]
    evaluation = [n for n in sub.parsers if n in EVALUATION_COMMANDS]
    return (
        "DisCoPatch: detect out-of-distribution and covariate-shifted images from ID images only.\n\n"
        f"commands:\n{block(everyday)}\n\n"
        f"evaluation and benchmarking:\n{block(evaluation)}\n\n"
        "'discopatch COMMAND --help' shows a command's options, defaults and examples."
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line; a sub-command with ``--config FILE`` first takes that file's values as its defaults
    (see :mod:`discopatch.cli.config_files`), and its resolved configuration is kept as ``args.run_config``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    assert parser.commands is not None
    command = parser.commands.parsers.get(argv[0]) if argv else None
    if command is None or not config_files.has_config_options(command):
        return parser.parse_args(argv)
    path = config_files.config_path(argv[1:])
    originals: dict[str, Any] = {}
    if path is not None:
        try:
            originals = config_files.apply_config(command, path)
        except ConfigError as e:  # one line: the usage block says nothing about the file's contents
            print(f"{command.prog}: error: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
    args = parser.parse_args(argv)
    config_files.settle_exclusive(command, args, originals)
    args.run_config = config_files.resolved_config(command, args)
    args.config_omitted = [k for k in config_files.SECRETS if k in config_files.config_keys(command)]
    return args


#: OpenMP's wait policy for the command's worker threads unless the environment sets one. With the default policy
#: an idle worker spins on its core; on a machine whose cores are busy with other processes the spinning
#: competes with them, and a 2-thread training step of the small preset was 3.8x slower than with passive
#: waiting (bit-identical results; docs/BENCHMARKS.md, "Training speed and GPU").
OMP_WAIT_POLICY_DEFAULT = "PASSIVE"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; returns the exit code (the table in :mod:`discopatch.errors`)."""
    # Before any command imports torch (OpenMP reads it once, when the runtime starts).
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY_DEFAULT)
    args = parse_args(argv)
    setup_logging(level=log_level(args), fmt=getattr(args, "log_format", "text"))
    hidden = (*config_files.SECRETS, "func", "run_config", "config_omitted")
    shown = config_files.mask_secrets({k: v for k, v in vars(args).items() if k not in hidden})
    LOGGER.debug("discopatch %s %s with %s", __version__, args.command, shown)
    if getattr(args, "print_config", False):
        fmt = config_files.config_format(args.config) if args.config else "yaml"
        sys.stdout.write(config_files.dump_config(args.run_config, fmt, args.command, args.config_omitted))
        return EXIT_OK
    try:
        code: int = args.func(args)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as e:
        extra = extra_of(e.name or "")
        if extra is None:
            raise
        return _failed(args.command, MissingExtra(e.name or "", extra))
    except DiscopatchError as e:
        return _failed(args.command, e)
    except (RuntimeError, ValueError, OSError) as e:
        # outside the hierarchy, so no deliberate refusal: a failure while running (out of memory, a backend's
        # error) or a bug; every refusal of the command's arguments is a DiscopatchError, caught above
        LOGGER.debug("traceback of the unexpected error", exc_info=True)
        text = " ".join(str(e).split()) or "(no message)"
        print(
            f"discopatch {args.command}: unexpected error: {type(e).__name__}: {text} (--verbose shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _failed(command: str, error: DiscopatchError) -> int:
    """Report ``error`` in one line and return the exit code of its class."""
    print(f"discopatch {command}: error: {error}", file=sys.stderr)
    return error.exit_code
