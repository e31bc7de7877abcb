"""Exit codes come from one exception hierarchy (:mod:`discopatch.errors`), and ``--help`` loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from discopatch.artifact.files import WEIGHTS_FILE, ArtifactError
from discopatch.cli import MissingExtra, main
from discopatch.cli.config_files import ConfigError
from discopatch.data.images import ImageReadError, InputNotFoundError
from discopatch.detector import Detector
from discopatch.errors import BadArtifactError, BadInputError, DiscopatchError, NotFittedError, UsageError

HEAVY = ("torch", "numpy", "fastapi", "sqlalchemy")


def test_the_hierarchy_keeps_the_old_builtin_bases() -> None:
    assert issubclass(ArtifactError, BadArtifactError) and issubclass(ArtifactError, ValueError)
    assert issubclass(NotFittedError, DiscopatchError) and issubclass(NotFittedError, RuntimeError)
    assert issubclass(ImageReadError, BadInputError) and issubclass(ImageReadError, ValueError)
    assert issubclass(InputNotFoundError, BadInputError) and issubclass(InputNotFoundError, FileNotFoundError)
    assert issubclass(ConfigError, UsageError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingExtra, UsageError) and issubclass(MissingExtra, RuntimeError)
    import discopatch
    import discopatch.detector

    assert discopatch.NotFittedError is discopatch.detector.NotFittedError is NotFittedError
    codes = [UsageError.exit_code, BadInputError.exit_code, BadArtifactError.exit_code, NotFittedError.exit_code]
    assert codes == [2, 3, 4, 5]


def _image(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (28, 28), 128).save(folder / "x.png")
    return folder / "x.png"


def test_a_tampered_model_directory_is_a_bad_artefact_not_a_usage_error(trained_detector, tmp_path, capsys) -> None:
    saved = trained_detector.save(tmp_path / "model")
    weights = saved / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert main(["score", str(saved), str(_image(tmp_path / "in"))]) == BadArtifactError.exit_code == 4
    err = capsys.readouterr().err
    assert err.startswith("discopatch score: error: ") and err.count("\n") == 1
    assert WEIGHTS_FILE in err and "checksum mismatch" in err


def test_a_missing_input_folder_is_bad_input(tmp_path, capsys) -> None:
    assert main(["fit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m")]) == BadInputError.exit_code == 3
    assert "discopatch fit: error: no such file or folder" in capsys.readouterr().err


def test_a_folder_without_readable_images_is_bad_input(tmp_path, capsys) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    assert main(["fit", str(tmp_path / "in"), "--out", str(tmp_path / "m")]) == BadInputError.exit_code
    assert "discopatch fit: error: no readable training images" in capsys.readouterr().err


def test_an_uncalibrated_detector_cannot_be_monitored(trained_detector, tmp_path, capsys) -> None:
    det = Detector.load(trained_detector.save(tmp_path / "calibrated"), device="cpu", engine="torch")
    det.calibration = None
    saved = det.save(tmp_path / "model")
    argv = ["monitor", str(saved), "--watch", str(tmp_path), "--once", "--db", str(tmp_path / "m.db")]
    assert main(argv) == NotFittedError.exit_code == 5
    assert "discopatch monitor: error:" in capsys.readouterr().err


def test_contradictory_options_are_usage_errors(tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path), "--ood", f"x={tmp_path}"]) == UsageError.exit_code == 2
    assert "discopatch evaluate: error: give the ID set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse's own usage errors exit with the same code
        main(["score"])
    assert exc.value.code == 2


def test_help_imports_no_heavy_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "discopatch", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "evaluation and benchmarking:" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_no_sub_command_help_imports_a_heavy_module() -> None:
    code = (
        "import sys\n"
        "from discopatch.cli import build_parser, main\n"
        "names = sorted(build_parser().commands.parsers)\n"
        "for name in names:\n"
        "    try:\n"
        "        main([name, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print('LOADED', len(names), sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "LOADED 10 []"


def test_an_unexpected_runtime_error_is_exit_1_in_one_line(trained_detector, tmp_path, capsys, monkeypatch) -> None:
    """Every RuntimeError used to be reported as a usage error (exit 2): only the hierarchy decides a code now, and a
    failure while running (here a stand-in for an out-of-memory error) is exit 1, one line, traceback with --verbose."""
    saved = trained_detector.save(tmp_path / "model")
    image = str(_image(tmp_path / "in"))

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(Detector, "iter_score_files", fail)
    assert main(["score", str(saved), image]) == 1
    err = capsys.readouterr().err
    assert err == (
        "discopatch score: unexpected error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB "
        "(--verbose shows the traceback)\n"
    )
    assert main(["score", str(saved), image, "--verbose"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_device_that_is_not_there_is_a_usage_error(trained_detector, tmp_path, capsys) -> None:
    import torch

    from discopatch.errors import UnavailableError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert issubclass(UnavailableError, UsageError) and issubclass(UnavailableError, RuntimeError)
    saved = trained_detector.save(tmp_path / "model")
    assert main(["score", str(saved), str(_image(tmp_path / "in")), "--device", "cuda"]) == UsageError.exit_code
    assert "no CUDA device is available" in capsys.readouterr().err


def test_attack_loads_a_legacy_detector_only_when_allowed(tmp_path) -> None:
    """``attack --model`` takes ``--allow-legacy-artifact`` like every other command that loads a detector."""
    from discopatch.cli.app import build_parser

    args = build_parser().parse_args(["attack", "--model", str(tmp_path), "--allow-legacy-artifact"])
    assert args.allow_legacy_artifact is True
    assert build_parser().parse_args(["attack", "--model", str(tmp_path)]).allow_legacy_artifact is False


def test_the_commands_own_usage_errors_are_raised_as_usage_errors(trained_detector, tmp_path, capsys) -> None:
    """A command reports a usage error by raising :class:`UsageError`, whose class gives the exit code."""
    from discopatch.cli.app import parse_args
    from discopatch.cli.score import cmd_score

    saved, image = str(trained_detector.save(tmp_path / "model")), str(_image(tmp_path / "in"))
    with pytest.raises(UsageError, match="--resume needs --out"):
        cmd_score(parse_args(["score", saved, image, "--resume"]))
    with pytest.raises(UsageError, match="--out must end in"):
        cmd_score(parse_args(["score", saved, image, "--out", str(tmp_path / "x.txt")]))
    assert main(["score", saved, image, "--out", str(tmp_path / "x.txt")]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("discopatch score: error: --out must end in") and err.count("\n") == 1


def test_the_cli_needs_no_argparse_internals() -> None:
    """The top-level help and the ``--config`` pre-parse read the commands from :class:`Subcommands`, which keeps
    each command's parser and help itself, not from argparse's private attributes."""
    import re

    from discopatch.cli import build_parser

    cli = Path(__file__).resolve().parents[1] / "src" / "discopatch" / "cli"
    for name in ("app.py", "options.py"):
        text = (cli / name).read_text(encoding="utf-8")
        assert not re.search(r"argparse\._|\._(actions|choices_actions|subparsers|group_actions|option_string)", text)
    parser = build_parser()
    assert parser.commands is not None and len(parser.commands.parsers) == 10
    for command, help_line in parser.commands.helps.items():
        assert f"  {command:<12} {help_line}" in parser.format_help()


def test_a_setting_the_library_refuses_is_a_usage_error_through_the_hierarchy(tmp_path, capsys) -> None:
    """The training configuration refuses ``--ema 1.5`` with a :class:`ConfigError` (still a ``ValueError``), and
    that class, not its builtin base, makes it exit 2 in one line."""
    from discopatch.config import TrainConfig
    from discopatch.errors import ConfigError as LibraryConfigError

    assert LibraryConfigError is ConfigError
    with pytest.raises(ConfigError, match="ema must be in"):
        TrainConfig(ema=1.5)
    argv = ["fit", str(_image(tmp_path / "in").parent), "--out", str(tmp_path / "m"), "--ema", "1.5"]
    assert main(argv) == UsageError.exit_code == 2
    err = capsys.readouterr().err
    assert err.endswith("discopatch fit: error: ema must be in [0, 1) (0 = off), got 1.5\n")
    assert not (tmp_path / "m").exists()


def test_a_plain_value_error_inside_a_command_is_unexpected_not_usage(trained_detector, tmp_path, capsys, monkeypatch):
    """A ``ValueError`` outside the hierarchy (here standing in for one from deep inside a dependency) is a bug, not
    a refusal of the command line: exit 1 with one line, as every other unexpected error."""
    saved, image = str(trained_detector.save(tmp_path / "model")), str(_image(tmp_path / "in"))

    def fail(*args, **kwargs):
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(Detector, "iter_score_files", fail)
    assert main(["score", saved, image]) == 1
    assert capsys.readouterr().err == (
        "discopatch score: unexpected error: ValueError: operands could not be broadcast together "
        "(--verbose shows the traceback)\n"
    )


#: The builtin ``ValueError`` / ``FileNotFoundError`` raises left in the package, by file: none refuses a user's
#: setting or argument (those raise the hierarchy); each is an internal invariant that a valid configuration never
#: reaches, or the parse of a data set file the benchmark downloads itself.
INTERNAL_RAISES = {
    # shape invariants that the validated configurations guarantee
    "model/norm.py": 2,
    "patches.py": 1,
    "detector_scoring.py": 1,
    "inference/engine.py": 1,
    # a damaged statistics tensor, reported by the artefact loader that calls it
    "inference/stats_model.py": 1,
    # IDX and data set file parsers: damaged downloads, and arrays the package writes itself
    "data/idx.py": 9,
    "data/builtin.py": 7,
    "benchmark/datasets/digits.py": 3,
    "benchmark/datasets/textures.py": 7,
    # benchmark internals, called only with the arguments the benchmark builds
    "benchmark/drift.py": 7,
    "benchmark/baselines/base.py": 1,
    "benchmark/baselines/one_class.py": 1,
    "benchmark/baselines/feature_stats.py": 1,
    "benchmark/baselines/classifier.py": 5,
}


def test_every_builtin_refusal_left_in_the_package_is_listed_as_internal() -> None:
    """A new ``raise ValueError(...)`` or ``raise FileNotFoundError(...)`` fails here: a refusal of the user's input
    raises a class of :mod:`discopatch.errors` (which keeps the builtin base), or the raise is listed above."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "discopatch"
    found: dict[str, int] = {}
    for path in sorted(src.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            exc = node.exc if isinstance(node, ast.Raise) else None
            if isinstance(exc, ast.Call):
                exc = exc.func
            if isinstance(exc, ast.Name) and exc.id in ("ValueError", "FileNotFoundError"):
                key = path.relative_to(src).as_posix()
                found[key] = found.get(key, 0) + 1
    assert found == INTERNAL_RAISES


def test_command_line_files_that_are_not_there_or_not_ours_are_still_usage_errors(trained_detector, tmp_path, capsys):
    """Two refusals that used to reach the user as a builtin error (so as exit 2 only through the old catch-all):
    a ``--merge`` folder without a curve, and a JSONL output that this program did not write, for ``--resume``."""
    argv = ["benchmark", "--protocol", "fmnist", "--curve", "--merge", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv) == UsageError.exit_code
    assert f"--merge: no curve.json in {tmp_path / 'curve.json'}" in capsys.readouterr().err
    saved, image = str(trained_detector.save(tmp_path / "model")), str(_image(tmp_path / "in"))
    out = tmp_path / "scores.jsonl"
    out.write_text('{"path": "/x.png"\n')
    assert main(["score", saved, image, "--out", str(out), "--resume"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("discopatch score: error: ") and "malformed JSON line" in err and err.count("\n") == 1
    assert out.read_text() == '{"path": "/x.png"\n'
