"""``fit --config`` / ``serve --config`` (YAML or TOML), ``--print-config``, and the resolved fit
configuration stored with the detector."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from discopatch.artifact.files import CONFIG_FILE, config_digest
from discopatch.artifact.schema import SCHEMA, validate
from discopatch.cli import main, parse_args
from discopatch.detector import Detector

FIT_FLAGS = ["imgs/", "--out", "model/", "--epochs", "3", "--widths", "8,16,32", "--betas", "0.5,0.999"]
FIT_FLAGS += ["--channels", "1", "--lr", "0.0002", "--no-first-norm", "--no-channels-last", "--resize", "pad"]


def _printed(argv: list[str], capsys) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_printed_config_repeats_the_run(tmp_path: Path, capsys, suffix: str) -> None:
    """Flags -> --print-config -> a file -> fit --config FILE resolves to the same configuration."""
    original = parse_args(["fit", *FIT_FLAGS]).run_config
    seed = tmp_path / f"seed{suffix}"  # --print-config writes the format of the --config file given
    seed.write_text("")
    printed = tmp_path / f"printed{suffix}"
    printed.write_text(_printed(["fit", *FIT_FLAGS, "--config", str(seed), "--print-config"], capsys))
    again = parse_args(["fit", "--config", str(printed)])
    assert again.run_config == original
    assert again.widths == (8, 16, 32) and again.betas == (0.5, 0.999) and again.no_first_norm is True
    assert again.channels_last is False and again.epochs == 3
    assert again.images == os.path.abspath("imgs/")  # printed absolute: the file means the same wherever it is
    if suffix == ".yaml":
        assert "widths: [8, 16, 32]\n" in printed.read_text()
    else:
        assert "widths = [8, 16, 32]\n" in printed.read_text() and "# max-steps = (not set)" in printed.read_text()


def test_print_config_without_a_file_is_yaml_and_exits_0(capsys) -> None:
    import yaml

    text = _printed(["fit", *FIT_FLAGS, "--print-config"], capsys)
    data = yaml.safe_load(text)
    assert data["epochs"] == 3 and data["max-steps"] is None and data["preset"] == "small"
    assert "config" not in data and "print-config" not in data


def test_flags_override_the_file_and_both_key_spellings_work(tmp_path: Path) -> None:
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("images: a/\nout: m/\nmax_steps: 10\nmax-time: 60\nlr: 2e-4\nchannels: 3\nresume: true\n")
    args = parse_args(["fit", "b/", "--config", str(cfg), "--max-steps", "20"])
    assert args.images == "b/"  # the positional and the required --out may come from the file
    assert args.out == f"{tmp_path}/m/"  # a relative path in the file is relative to the file's folder
    assert args.max_steps == 20 and args.max_time == 60.0 and args.resume is True
    assert args.lr == 2e-4 and args.channels == "3"  # YAML reads 2e-4 as text and 3 as a number: both as on the CLI


def test_a_flag_beats_the_file_value_of_an_option_it_excludes(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("images: a/\nout: m/\nquiet: true\n")
    assert parse_args(["fit", "--config", str(cfg)]).quiet is True
    args = parse_args(["fit", "--config", str(cfg), "--verbose"])
    assert args.verbose is True and args.quiet is False
    cfg.write_text("images: a/\nout: m/\nquiet: true\nverbose: true\n")
    with pytest.raises(SystemExit):
        parse_args(["fit", "--config", str(cfg)])
    assert "--quiet and --verbose exclude each other" in capsys.readouterr().err


def test_toml_config(tmp_path: Path) -> None:
    cfg = tmp_path / "fit.toml"
    cfg.write_text('images = "a/"\nout = "m/"\nwidths = [16, 32]\ntarget_fpr = 0.01\ncompile = true\n')
    args = parse_args(["fit", "--config", str(cfg)])
    assert args.widths == (16, 32) and args.target_fpr == 0.01 and args.compile is True


BASE = "images: a/\nout: m/\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "epoch: 3\n", "unknown key 'epoch'; valid keys: ablation, amp, augment, batch-images"),
        (BASE + "epochs: 2.5\n", "epochs: expected an integer, got 2.5"),
        (BASE + "epochs: [1, 2]\n", "epochs: expected an integer, got [1, 2]"),
        (BASE + "max-time: true\n", "max-time: expected a number, got True"),
        (BASE + "resume: 'yes'\n", "resume: expected true or false, got 'yes'"),
        (
            BASE + "preset: huge\n",
            "preset: 'huge' is not one of small, small-long, small-photo, small-photo-long, paper, small-1x1",
        ),
        (BASE + "widths: [8, x]\n", "widths: expected comma-separated integers, got '8,x'"),
        (BASE + "seed: {a: 1}\n", "seed: expected an integer, got {'a': 1}"),
        (BASE + "max_steps: 1\nmax-steps: 2\n", "'max-steps' and 'max_steps' set the same option"),
        ("- a\n", "expected a mapping of option names to values, got list"),
        ("a: [\n", "invalid YAML"),
    ],
)
def test_bad_config_files_are_clear_usage_errors(tmp_path: Path, capsys, text: str, message: str) -> None:
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(text)
    with pytest.raises(SystemExit) as exc:
        parse_args(["fit", "--config", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"discopatch fit: error: {cfg}" in err and message in err


def test_unsupported_extension_and_missing_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "fit.json").write_text("{}")
    for name, message in (("fit.json", "must end in .yaml, .yml or .toml"), ("no.yaml", "cannot read config file")):
        with pytest.raises(SystemExit):
            parse_args(["fit", "a/", "--out", "m/", "--config", str(tmp_path / name)])
        assert message in capsys.readouterr().err


def test_serve_config_and_secrets_are_never_printed(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("model: m/\nport: 8080\nwebhook: [http://a]\ntoken: s3cret\nmax_images: 4\nwindow-seconds: 30\n")
    args = parse_args(["serve", "--config", str(cfg), "--webhook", "http://b", "--port", "9000"])
    assert args.model == f"{tmp_path}/m/" and args.port == 9000 and args.max_images == 4 and args.window_seconds == 30.0
    assert args.token == "s3cret" and args.webhook == ["http://a", "http://b"]  # a repeatable flag adds to the file's
    text = _printed(["serve", "--config", str(cfg), "--print-config"], capsys)
    assert "s3cret" not in text and "# token: never written here" in text
    printed = tmp_path / "printed.yaml"
    printed.write_text(text)
    again = parse_args(["serve", "--config", str(printed)])
    assert again.run_config == parse_args(["serve", "--config", str(cfg)]).run_config
    with pytest.raises(SystemExit):
        parse_args(["serve", "--config", str(printed), "--port", "http"])
    capsys.readouterr()


@pytest.mark.slow
def test_fit_stores_the_resolved_configuration_outside_the_digest(tmp_path: Path, fmnist, capsys) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    for i, a in enumerate(fmnist.train_images[:48]):
        Image.fromarray(a).save(images / f"{i}.png")
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(
        f"images: {images}\nout: {tmp_path / 'model'}\nmax-steps: 2\ndevice: cpu\nwidths: [8, 16, 32]\n"
        "latent-dim: 16\nbatch-images: 8\ntrain-patches: 4\ntest-patches: 8\nimage-size: 32\npatch-size: 16\n"
        "resize: pad\nval-fraction: 0.25\ntarget-fpr: 0.2\n"
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    assert "loading" in capsys.readouterr().err  # fit shows progress reading the images (a log line, not a TTY)
    meta = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    expected = parse_args(["fit", "--config", str(cfg)]).run_config
    assert meta["run_config"] == expected and meta["run_config"]["max-steps"] == 2
    assert validate(meta, SCHEMA) == []
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(meta, SCHEMA)
    # provenance only: not part of the score-deciding digest, so editing it does not refuse the artefact
    assert not any(k.startswith("run_config") for k in meta["digest"]["fields"])
    meta["run_config"]["seed"] = 99
    (tmp_path / "model" / CONFIG_FILE).write_text(json.dumps(meta))
    det = Detector.load(tmp_path / "model", device="cpu")
    assert det.run_config is not None and det.run_config["seed"] == 99
    # an artefact saved without one (through the API, or by an earlier version) still loads
    del meta["run_config"]
    meta["digest"] = config_digest(meta)
    (tmp_path / "model" / CONFIG_FILE).write_text(json.dumps(meta))
    assert Detector.load(tmp_path / "model", device="cpu").run_config is None
