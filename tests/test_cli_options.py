"""The options the commands share are declared once (``discopatch.cli.options``) and parsed at parse time."""

from __future__ import annotations

import argparse

import pytest

from discopatch.cli import build_parser
from discopatch.cli.options import betas, ints, names, positive_ints

PARSER = build_parser()
SUB = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))


def test_list_types() -> None:
    assert ints("0,1, 2,") == (0, 1, 2) and positive_ints("32,64") == (32, 64)
    assert names(" torch, onnx ,") == ["torch", "onnx"] and betas("0.5,0.999") == (0.5, 0.999)
    for bad, parse in [("", ints), ("a,b", ints), ("0,32", positive_ints), ("1.5", betas), ("1,0.9", betas)]:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


@pytest.mark.parametrize("option", ["--device", "--engine", "--precision", "--preset"])
def test_a_shared_option_means_the_same_in_every_command(option: str) -> None:
    """Where two commands offer the option with one meaning, its choices, default and help are the same."""
    found = {
        name: a
        for name, p in SUB.choices.items()
        for a in p._actions
        if option in a.option_strings and not (option == "--precision" and name == "bench-speed")  # a list there
    }
    assert len(found) >= 2 or option == "--precision", found
    first = next(iter(found.values()))
    for name, a in found.items():
        assert a.choices == first.choices, name
        if option == "--preset" and name == "benchmark":  # default: the protocol's preset, said in its help
            assert a.default is None and "protocol's" in a.help
        else:
            assert a.default == first.default, name
        if option != "--preset":  # the preset's help says what it is for in each command
            assert a.help == first.help, name


def test_benchmark_and_attack_lists_are_parsed_when_the_command_line_is() -> None:
    args = PARSER.parse_args(
        ["benchmark", "--protocol", "fmnist", "--curve", "--widths", "8,16", "--betas", "0.5,0.9", "--at-steps", "2,4"]
    )
    assert (args.seeds, args.widths, args.betas, args.at_steps) == ((0, 1, 2), (8, 16), (0.5, 0.9), (2, 4))
    assert args.stages == ["variants", "ablations", "baselines", "drift", "mixed", "patches"]
    assert PARSER.parse_args(["attack"]).eps == (1, 2, 4, 8)
    with pytest.raises(SystemExit) as exc:
        PARSER.parse_args(["attack", "--eps", "1,x"])
    assert exc.value.code == 2


def test_curve_merge_without_out_is_a_usage_error(tmp_path, capsys) -> None:
    from discopatch.cli import main

    assert main(["benchmark", "--protocol", "fmnist", "--curve", "--merge", str(tmp_path)]) == 2
    assert "discopatch benchmark: error: --merge needs --out" in capsys.readouterr().err
