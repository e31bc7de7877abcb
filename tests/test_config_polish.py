"""Config files and option values at the edges: range-checked ports and seeds, non-regular files,
masked secrets, duplicate keys, paths relative to the file, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from discopatch.cli import main, parse_args
from discopatch.cli.config_files import mask_secrets

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _config_error(argv: list[str], capsys) -> str:
    """The standard error of a command line refused as a usage error (exit 2)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("port", [65536, 10**9, -1])
def test_a_port_out_of_range_is_a_one_line_error(tmp_path: Path, capsys, port: int) -> None:
    """``port: 70000`` in a file used to pass the parser and end in a traceback at bind time."""
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"model: m/\nport: {port}\n")
    err = _config_error(["serve", "--config", str(cfg)], capsys)
    assert err == f"discopatch serve: error: {cfg}: port: a port must lie in 0..65535, got {port}\n"
    err = _config_error(["serve", "m/", f"--port={port}"], capsys)
    assert "a port must lie in 0..65535" in err
    assert parse_args(["serve", "m/", "--port", "65535"]).port == 65535


@pytest.mark.parametrize("seed", [str(2**63), str(2**70), "-1"])
def test_a_seed_out_of_range_is_a_usage_error(capsys, seed: str) -> None:
    """A seed above 2**63 - 1 used to be accepted and fail later with OverflowError."""
    err = _config_error(["fit", "a/", "--out", "m/", f"--seed={seed}"], capsys)
    assert "a seed must lie in 0..9223372036854775807" in err
    assert parse_args(["fit", "a/", "--out", "m/", "--seed", str(2**63 - 1)]).seed == 2**63 - 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_as_config_is_refused_without_blocking(tmp_path: Path) -> None:
    """It used to block for ever, waiting for a writer."""
    fifo = tmp_path / "run.yaml"
    os.mkfifo(fifo)
    code = f"from discopatch.cli import main; main(['fit', '--config', {str(fifo)!r}])"
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == (
        f"discopatch fit: error: {fifo}: not a regular file (a config file must be a .yaml, .yml or .toml file)\n"
    )


def test_a_folder_as_config_is_refused(tmp_path: Path, capsys) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert "not a regular file" in _config_error(["fit", "--config", str(tmp_path / "dir.yaml")], capsys)


def test_config_errors_are_one_line_without_the_usage_block(tmp_path: Path, capsys) -> None:
    """They used to print argparse's ~20-line usage block before the message."""
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("images: a/\nepoch: 3\n")
    err = _config_error(["fit", "--config", str(cfg)], capsys)
    assert err.count("\n") == 1 and err.startswith(f"discopatch fit: error: {cfg}: unknown key 'epoch'")
    assert "usage:" not in err


def test_a_duplicate_yaml_key_is_an_error_naming_the_key_and_line(tmp_path: Path, capsys) -> None:
    """PyYAML keeps the last value without a word."""
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("images: a/\nout: m/\nepochs: 3\nlr: 0.001\nepochs: 30\n")
    err = _config_error(["fit", "--config", str(cfg)], capsys)
    assert err == f"discopatch fit: error: {cfg}: duplicate key 'epochs' on line 5 (first set on line 3)\n"
    cfg.write_text("images: a/\nout: m/\nwebhook: {a: 1, a: 2}\n")  # nested mappings too
    assert "duplicate key 'a' on line 3" in _config_error(["fit", "--config", str(cfg)], capsys)


def test_relative_paths_in_a_file_are_relative_to_its_folder(tmp_path: Path, monkeypatch) -> None:
    """They used to resolve against the working directory."""
    folder = tmp_path / "project"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (folder / "fit.yaml").write_text("images: data/train\nout: /abs/model\n")
    args = parse_args(["fit", "--config", "../project/fit.yaml"])
    assert os.path.abspath(args.images) == str(folder / "data" / "train") and args.out == "/abs/model"
    assert args.run_config["images"] == str(folder / "data" / "train")  # printed and stored absolute
    (folder / "serve.yaml").write_text("model: m\ndb: sqlite:///runs/m.db\nalerts-jsonl: alerts.jsonl\n")
    args = parse_args(["serve", "--config", str(folder / "serve.yaml")])
    assert args.model == str(folder / "m") and args.alerts_jsonl == str(folder / "alerts.jsonl")
    assert args.db == f"sqlite:///{folder}/runs/m.db"
    flags = parse_args(["serve", "m", "--config", str(folder / "serve.yaml"), "--db", "x.db"])
    assert flags.model == "m" and flags.db == "x.db"  # flags stay relative to the working directory


def test_print_config_masks_credentials(tmp_path: Path, capsys) -> None:
    """``--print-config`` used to print the database password and the webhook credentials."""
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        "model: m/\ndb: postgresql+psycopg://monitor:db-pa55@db.internal:5432/discopatch?sslmode=require\n"
        "webhook: ['https://hooks.slack.com/services/T000/B000/sl4ck-t0ken', 'https://alice:w3b-pa55@hooks.example/"
        "alert?api_key=k3y&channel=ops']\n"
    )
    assert main(["serve", "--config", str(cfg), "--print-config"]) == 0
    out = capsys.readouterr().out
    for secret in ("db-pa55", "sl4ck-t0ken", "T000", "alice", "w3b-pa55", "k3y"):
        assert secret not in out
    assert "postgresql+psycopg://monitor:***@db.internal:5432/discopatch?sslmode=require" in out
    assert "https://hooks.slack.com/***" in out and "https://***@hooks.example/***?api_key=***&channel=***" in out
    assert "# ***: a credential inside a URL, masked" in out


def test_mask_secrets_leaves_other_values_alone() -> None:
    config = {"db": "sqlite:////data/m.db", "host": "127.0.0.1", "webhook": ["http://a"], "port": 8000}
    assert mask_secrets(config) == config
    assert mask_secrets({"db": "redis://:pw@h/0?password=x&db=1"}) == {"db": "redis://:***@h/0?password=***&db=1"}
