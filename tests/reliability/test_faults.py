"""Faults: training killed (SIGKILL) or interrupted (SIGINT) resumes without losing completed work, and an
interrupted ``discopatch score --out FILE`` finishes with ``--resume`` without rescoring anything."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from discopatch.cli import main

TINY = ["--widths", "8,16,32", "--latent-dim", "16", "--batch-images", "16", "--train-patches", "4",
        "--test-patches", "8", "--image-size", "32", "--patch-size", "16", "--resize", "pad", "--quiet",
        "--device", "cpu", "--channels", "1", "--target-fpr", "0.1"]  # fmt: skip
# 144 images, 10% held out -> 130 train images in batches of 16 (last one short); 14 calibration images are enough
# for a 10 % false-positive rate (9), not for 5 % (19)
STEPS_PER_EPOCH = 8


@pytest.fixture(scope="module")
def train_dir(fmnist, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fault-train")
    for i, a in enumerate(fmnist.train_images[:144]):
        Image.fromarray(a).save(folder / f"{i:03d}.png")
    return folder


def _fit(train_dir: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "discopatch.cli", "fit", str(train_dir), "--out", str(out), *TINY, *extra]
    # Other tests (uvicorn servers) may leave SIGINT ignored in this process; a child would inherit SIG_IGN and
    # Python would then never raise KeyboardInterrupt. Start the child with the default disposition, like a shell.
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def _checkpoint(out: Path) -> dict | None:
    try:
        return json.loads((out / "checkpoints" / "checkpoint.json").read_text())["state"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def _wait_for_epoch(proc: subprocess.Popen, out: Path, epoch: int) -> None:
    """Poll (no timing assumptions beyond a generous deadline) until a checkpoint of ``epoch`` epochs exists."""
    deadline = time.monotonic() + 240
    while (st := _checkpoint(out)) is None or st["epoch"] < epoch:
        assert proc.poll() is None, f"training ended before epoch {epoch}: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def _weights(out: Path) -> dict:
    return load_file(str(out / "discriminator.safetensors"))


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert bool((wa[k] == wb[k]).all()), k


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_training_resumes_to_the_uninterrupted_result(sig, train_dir, tmp_path) -> None:
    out = tmp_path / "run"
    proc = _fit(train_dir, out, "--epochs", "1000", "--max-time", "240")
    _wait_for_epoch(proc, out, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    st = _checkpoint(out)
    assert st is not None and st["epoch"] >= 2  # no completed epoch lost; the checkpoint is whole and readable
    assert st["step"] == st["epoch"] * STEPS_PER_EPOCH + st["batch_in_epoch"]
    if sig == signal.SIGKILL:
        assert st["batch_in_epoch"] == 0  # only the per-epoch checkpoints exist after a kill
    target = st["epoch"] + 1
    ckpt_weights = load_file(str(out / "checkpoints" / "checkpoint.safetensors"), device="cpu")
    assert ckpt_weights  # the weights file pairs with the state (its own metadata carries the same step)
    _finish(_fit(train_dir, out, "--resume", "--epochs", str(target)))
    info = json.loads((out / "detector.json").read_text())["training"]
    assert info["epochs_completed"] == target and info["steps"] == target * STEPS_PER_EPOCH
    ref = tmp_path / "reference"
    _finish(_fit(train_dir, ref, "--epochs", str(target), "--max-time", "240"))
    _same_weights(out, ref)


def test_resume_without_checkpoint_is_a_clear_error(train_dir, tmp_path, capsys) -> None:
    code = main(["fit", str(train_dir), "--out", str(tmp_path / "none"), "--resume", "--epochs", "1", *TINY])
    assert code == 2 and "no checkpoint found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ score --resume
@pytest.fixture
def images(tmp_path) -> list[Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(7):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(p)
        paths.append(p)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return sorted(folder.iterdir())


def _score(model_dir: Path, folder: Path, out: Path, *extra: str) -> int:
    return main(["score", str(model_dir), str(folder), "--out", str(out), "--engine", "torch", *extra])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_score_resume_skips_written_rows_and_repairs_a_torn_line(model_dir, images, tmp_path, suffix, monkeypatch):
    folder = images[0].parent
    full = tmp_path / f"full{suffix}"
    assert _score(model_dir, folder, full) == 1  # one broken file -> exit 1, every file has a row
    lines = full.read_bytes().splitlines(keepends=True)
    head = 1 if suffix == ".csv" else 0
    part = tmp_path / f"part{suffix}"
    part.write_bytes(b"".join(lines[: head + 3]) + lines[head + 3][:9])  # killed while writing the 4th row

    from discopatch.detector import Detector

    scored: list[str] = []
    real = Detector.iter_score_files

    def spy(self, paths, chunk_size=None):
        scored.extend(str(p) for p in paths)
        return real(self, paths, chunk_size)

    monkeypatch.setattr(Detector, "iter_score_files", spy)
    assert _score(model_dir, folder, part, "--resume") == 1
    done = [json.loads(x)["path"] if suffix == ".jsonl" else next(csv.reader([x.decode()]))[0]
            for x in lines[head : head + 3]]  # fmt: skip
    assert not set(done) & set(scored) and len(scored) == len(images) - 3  # nothing rescored
    assert part.read_bytes() == full.read_bytes()  # same rows, same order, header once, torn line gone
    scored.clear()
    # nothing left to do, but the output still holds the broken file's error row: a final run is not a success
    assert _score(model_dir, folder, part, "--resume") == 1
    assert scored == [] and part.read_bytes() == full.read_bytes()


def test_score_resume_needs_out_and_a_score_file(model_dir, images, tmp_path, capsys) -> None:
    folder = images[0].parent
    assert main(["score", str(model_dir), str(folder), "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert _score(model_dir, folder, other, "--resume") == 2
    assert "cannot --resume" in capsys.readouterr().err
    # A CSV from before the threshold/model_id columns is named as such, not as a foreign file.
    older = tmp_path / "older.csv"
    older.write_text("path,score,p_value,is_ood,error\n/x.png,0.1,0.5,False,\n")
    assert _score(model_dir, folder, older, "--resume") == 2
    err = capsys.readouterr().err
    assert "older discopatch" in err and "'threshold', 'model_id'" in err and "new file" in err
    assert older.read_text() == "path,score,p_value,is_ood,error\n/x.png,0.1,0.5,False,\n"  # left untouched


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_file_names_are_written_escaped_and_resumed(model_dir, images, tmp_path, suffix) -> None:
    """A file name that is not valid UTF-8 aborted the run with exit 2 and --resume could never get past it."""
    folder = images[0].parent
    bad_name = os.fsdecode(b"caf\xe9-\xff.png")  # Latin-1 bytes: invalid UTF-8
    shutil.copy(images[0], folder / bad_name)
    (folder / os.fsdecode(b"broken-\xfe.png")).write_bytes(b"\x89PNG\r\n\x1a\n")  # a bad one too: its error row
    out = tmp_path / f"scores{suffix}"
    assert _score(model_dir, folder, out) == 1  # the two broken files -> 1, not 2
    text = out.read_bytes().decode("utf-8")  # strict: the output is valid UTF-8
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    else:
        rows = [json.loads(line) for line in text.splitlines()]
    by_path = {r["path"]: r for r in rows}
    good = by_path[f"{folder}/caf\\xe9-\\xff.png"]
    assert float(good["score"]) == float(by_path[str(images[0])]["score"])  # scored like its twin
    broken = by_path[f"{folder}/broken-\\xfe.png"]
    assert "broken-\\xfe.png: corrupt or truncated" in broken["error"]
    assert len(rows) == len(images) + 2
    before = out.read_bytes()
    # every file, escaped names included, already has a row (nothing rescored); the broken ones' rows keep it at 1
    assert _score(model_dir, folder, out, "--resume") == 1
    assert out.read_bytes() == before


def test_score_resume_repairs_a_cut_inside_a_quoted_field(model_dir, images, tmp_path) -> None:
    """A path (or error) with a newline is a quoted CSV field over two lines; a kill right after that newline left
    half a record that --resume took for a complete row, and the next rows were appended to the malformed one."""
    folder = images[0].parent
    (folder / "zz\nnewline.png").write_bytes(b"not an image")  # sorts last; its row is an error row
    full = tmp_path / "full.csv"
    assert _score(model_dir, folder, full) == 1
    data = full.read_bytes()
    cut = data.index(b"zz\n") + 3  # inside the quoted path of the last record, just after its newline
    part = tmp_path / "part.csv"
    part.write_bytes(data[:cut])
    assert _score(model_dir, folder, part, "--resume") == 1
    assert part.read_bytes() == data  # the torn record is written again whole
    rows = list(csv.reader(io.StringIO(part.read_text(encoding="utf-8"), newline="")))
    assert rows[-1][0] == str(folder / "zz\nnewline.png") and len(rows) == len(images) + 2


def test_score_resume_refuses_a_csv_damaged_before_its_end(model_dir, images, tmp_path, capsys) -> None:
    folder = images[0].parent
    out = tmp_path / "scores.csv"
    assert _score(model_dir, folder, out) == 1
    lines = out.read_bytes().splitlines(keepends=True)
    lines[2] = b'"' + lines[2][:-1] + b'"x\n'  # not a record this program writes, in the middle of the file
    out.write_bytes(b"".join(lines))
    damaged = out.read_bytes()
    assert _score(model_dir, folder, out, "--resume") == 2
    assert "malformed CSV record" in capsys.readouterr().err
    assert out.read_bytes() == damaged  # nothing truncated or appended
