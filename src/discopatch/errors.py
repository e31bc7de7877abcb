"""The errors discopatch raises on purpose, each with the exit code the command line turns it into.

A leaf module (it imports nothing of the package), so every layer can raise these and the CLI can map them without
importing the layers. The concrete classes keep the builtin base they had before the hierarchy existed
(``ArtifactError`` is still a ``ValueError``, ``NotFittedError`` a ``RuntimeError``), so ``except ValueError`` in
existing code keeps catching them.

=====  ==========================  ========================================================================
code   class                       meaning
=====  ==========================  ========================================================================
0      -                           success
1      -                           some inputs could not be scored (``score``: see the error column), a
                                   check failed (``export --check``), or an unexpected failure (any error
                                   outside this hierarchy, e.g. out of memory or a ``ValueError`` from a
                                   dependency: a bug or the machine, not the command line; one line, the
                                   traceback with ``--verbose``)
2      :class:`UsageError`         the command line asked for something impossible: argparse errors, an
                                   invalid setting, option value or argument, in a ``--config`` file or
                                   not (``ConfigError``), a file the command needs that is not there
                                   (``MissingFileError``), a missing optional extra (``MissingExtra``), a
                                   device or engine not available here (``UnavailableError``),
                                   contradictory options
3      :class:`BadInputError`      an input image or input folder is missing or unreadable
                                   (``ImageReadError``, ``InputNotFoundError``,
                                   ``NoReadableImagesError``), or too few ID images to calibrate
                                   (``TooFewCalibrationImagesError``)
4      :class:`BadArtifactError`   a detector directory is missing, damaged, edited or mismatched
                                   (``ArtifactError``)
5      :class:`NotFittedError`     a detector was used before it was trained or calibrated
130    -                           interrupted (Ctrl-C)
=====  ==========================  ========================================================================
"""

from __future__ import annotations


class DiscopatchError(Exception):
    """Base of the errors discopatch raises on purpose; ``exit_code`` is what ``discopatch`` exits with."""

    exit_code = 2


class UsageError(DiscopatchError):
    """The command line (or a config file) asks for something that cannot be done as given."""

    exit_code = 2


class ConfigError(UsageError, ValueError):
    """A setting, option value or argument the library does not accept (a config field out of range, an unknown
    preset, engine or score mode, a config file that cannot be read); still a ``ValueError``, as before the
    hierarchy, so the library stays usable without the CLI."""


class MissingFileError(UsageError, FileNotFoundError):
    """A file the command needs besides its inputs is not there (a checkpoint for ``--resume``, a built-in data
    set's files); still a ``FileNotFoundError``, as before the hierarchy."""


class UnavailableError(UsageError, RuntimeError):
    """Something the command asks for is not available on this machine: a CUDA device, an optional engine, a data
    set's files (still a ``RuntimeError``, as before the hierarchy)."""


class BadInputError(DiscopatchError):
    """An input image or folder is missing or cannot be read."""

    exit_code = 3


class InputNotFoundError(BadInputError, FileNotFoundError):
    """An input file or folder does not exist."""


class NoReadableImagesError(BadInputError, ValueError):
    """A set of inputs (training folder, ID or OOD set) has no image that could be read."""


class TooFewCalibrationImagesError(BadInputError, ValueError):
    """Too few held-out ID images for a finite threshold at the target false-positive rate (or for the drift
    tests): the detector would never flag anything, so it is refused instead of saved or served."""


class BadArtifactError(DiscopatchError):
    """A saved detector is missing, damaged or does not match its configuration."""

    exit_code = 4


class NotFittedError(DiscopatchError, RuntimeError):
    """The detector has no trained discriminator (or no calibration) yet."""

    exit_code = 5


#: Every exit code the command line uses, by name (README, "Exit codes").
EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, UsageError.exit_code, 130
#: An unexpected run-time failure shares code 1 with "some inputs failed": both mean "the run did not fully succeed".
EXIT_UNEXPECTED = EXIT_FAILED_INPUTS
