"""The ``discopatch`` command line, one module per command area.

* :mod:`.app` - the parser (:func:`build_parser`, :func:`parse_args`) and :func:`main`, which maps errors to exit
  codes (:mod:`discopatch.errors`);
* :mod:`.options` - what the commands share: parser and help classes, option types, the options declared once,
  the optional extras (:func:`require_extra`, :class:`MissingExtra`);
* :mod:`.config_files` - ``--config FILE`` (YAML / TOML) and ``--print-config``;
* one module per area, each with ``add_commands(subparsers)``: :mod:`.train` (``fit``), :mod:`.score`,
  :mod:`.evaluate`, :mod:`.demo`, :mod:`.monitoring` (``serve``, ``monitor``), :mod:`.deploy` (``export``,
  ``bench-speed``), :mod:`.benchmark` (``benchmark``, ``attack``).

Nothing of the package imports this one back, and none of these modules imports torch, numpy, FastAPI or
SQLAlchemy at the top: a command imports what it needs when it runs, so ``discopatch --help`` stays fast and works
without the optional extras.
"""

from ..errors import EXIT_FAILED_INPUTS, EXIT_OK, EXIT_USAGE
from .app import EVALUATION_COMMANDS, build_parser, main, parse_args
from .options import EXTRAS, MissingExtra, examples, require_extra

__all__ = [
    "EVALUATION_COMMANDS",
    "EXIT_FAILED_INPUTS",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXTRAS",
    "MissingExtra",
    "build_parser",
    "examples",
    "main",
    "parse_args",
    "require_extra",
]
