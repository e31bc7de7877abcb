"""Help that helps: every option explained with its default, examples per command, grouped overview."""

from __future__ import annotations

import argparse

import pytest

from discopatch.cli import EVALUATION_COMMANDS, build_parser, main

PARSER = build_parser()
SUB = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))


def _options(name: str) -> list[argparse.Action]:
    return [a for a in SUB.choices[name]._actions if not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


@pytest.mark.parametrize("name", sorted(SUB.choices))
def test_every_argument_has_help_and_shows_its_default(name: str) -> None:
    parser = SUB.choices[name]
    formatter = parser._get_formatter()
    for action in _options(name):
        assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        if action.option_strings and action.default is not None and action.default is not False:
            shown = formatter._get_help_string(action) % {"default": action.default}
            assert "default" in shown.lower(), f"{name} {action.option_strings}: default not shown"


@pytest.mark.parametrize("name", sorted(SUB.choices))
def test_every_command_has_example_epilog(name: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"discopatch {name}" in out.split("examples:")[1]


def test_defaults_appear_in_the_rendered_help(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "images per forward pass (speed and memory only) (default: 256)" in text
    assert "(default: fp32)" in text
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    fit_text = " ".join(capsys.readouterr().out.split())
    assert "the test patch positions (default: 0)" in fit_text  # --seed: a zero default is a default too


def test_top_level_help_groups_evaluation_commands_apart(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    everyday, evaluation = out.split("evaluation and benchmarking:")
    for name in ("fit", "score", "evaluate", "serve", "monitor", "export"):
        assert f"\n  {name} " in everyday
    for name in EVALUATION_COMMANDS:
        assert f"\n  {name} " in evaluation and f"\n  {name} " not in everyday
    assert "usage: discopatch [-h] [--version] COMMAND" in out


@pytest.mark.parametrize("name", sorted(SUB.choices))
def test_every_command_has_quiet_and_verbose_with_one_meaning(name: str) -> None:
    text = " ".join(SUB.choices[name].format_help().split())
    assert "--quiet warnings and errors only: no progress bars or info log lines" in text
    assert "--verbose also debug log lines" in text
