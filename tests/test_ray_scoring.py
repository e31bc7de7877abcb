"""``discopatch score --ray`` and :mod:`discopatch.scale` on a local Ray cluster.

One two-CPU cluster for the module. Both sides of every comparison run on this machine with one PyTorch thread
(the plain reference in this process, the actors with ``--ray-threads 1``), so exact equality is fair.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from discopatch.cli import main

ray = pytest.importorskip("ray", reason="the [ray] extra (Ray Data) is not installed")
pytest.importorskip("ray.data", reason="the [ray] extra (Ray Data) is not installed")
pq = pytest.importorskip("pyarrow.parquet", reason="the [ray] extra (pyarrow) is not installed")

from discopatch import scale  # noqa: E402

N_IMAGES = 48
RAY = ["--ray", "auto", "--ray-actors", "2", "--ray-threads", "1", "--engine", "torch", "--batch-size", "8"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    scale.quiet_data_context()
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(trained_detector, tmp_path_factory) -> Path:
    return trained_detector.save(tmp_path_factory.mktemp("ray") / "model")


@pytest.fixture(scope="module")
def images(fmnist, tmp_path_factory) -> Path:
    """A folder of PNGs, a sub-folder, one file that is not an image and one empty file."""
    root = tmp_path_factory.mktemp("ray-images")
    (root / "sub").mkdir()
    for i, img in enumerate(fmnist.test_images[:N_IMAGES]):
        Image.fromarray(np.asarray(img)).save(root / ("sub" if i % 5 == 0 else ".") / f"img{i:03d}.png")
    (root / "broken.png").write_bytes(b"not a png at all")
    (root / "empty.jpg").write_bytes(b"")
    return root


def plain(argv: list[str]) -> int:
    """Plain ``discopatch score`` at one PyTorch thread, like the actors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["score", *argv, "--engine", "torch", "--quiet"])
    finally:
        torch.set_num_threads(threads)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_csv_is_byte_identical_to_plain_score(cluster, model_dir, images, tmp_path) -> None:
    missing = str(tmp_path / "missing.png")
    assert plain([str(model_dir), str(images), missing, "--out", str(tmp_path / "plain.csv")]) == 1
    argv = ["score", str(model_dir), str(images), missing, *RAY, "--out", str(tmp_path / "ray.csv"), "--quiet"]
    assert main(argv) == 1  # error rows -> exit 1, as plain score
    expected = (tmp_path / "plain.csv").read_bytes()
    assert (tmp_path / "ray.csv").read_bytes() == expected
    rows = list(csv.DictReader(expected.decode().splitlines()))
    assert len(rows) == N_IMAGES + 3
    errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
    assert set(errors) == {"broken.png", "empty.jpg", "missing.png"}
    assert "empty file" in errors["empty.jpg"] and "not a recognised image format" in errors["broken.png"]


def test_jsonl_and_parquet_rows_equal_plain_score(cluster, model_dir, images, tmp_path) -> None:
    assert plain([str(model_dir), str(images), "--out", str(tmp_path / "plain.jsonl")]) == 1
    expected = jsonl(tmp_path / "plain.jsonl")
    assert main(["score", str(model_dir), str(images), *RAY, "--out", str(tmp_path / "ray.parquet"), "--quiet"]) == 1
    table = pq.read_table(tmp_path / "ray.parquet")
    assert table.schema.field("score").type == "double"
    assert table.to_pylist() == expected  # same columns, same order, bit-identical floats
    assert not list(tmp_path.glob(".*partial"))


def test_file_uris_are_read_through_pyarrow(cluster, model_dir, images, tmp_path) -> None:
    assert plain([str(model_dir), str(images), "--out", str(tmp_path / "plain.jsonl")]) == 1
    expected = jsonl(tmp_path / "plain.jsonl")
    missing = f"file://{tmp_path}/nothing.png"
    argv = ["score", str(model_dir), f"file://{images}", missing, *RAY, "--out", str(tmp_path / "u.jsonl"), "--quiet"]
    assert main(argv) == 1
    rows = jsonl(tmp_path / "u.jsonl")
    assert rows[-1]["path"] == missing and rows[-1]["error"] == f"{missing}: file not found"
    assert [r["path"] for r in rows[:-1]] == [f"file://{r['path']}" for r in expected]
    for got, want in zip(rows, expected):
        assert (got["score"], got["p_value"], got["is_ood"]) == (want["score"], want["p_value"], want["is_ood"])
        if want["error"]:  # the same reason, naming the URI
            assert got["error"] == want["error"].replace(want["path"], got["path"])


def test_resume_scores_only_what_is_missing(cluster, model_dir, images, tmp_path) -> None:
    out = tmp_path / "ray.jsonl"
    assert plain([str(model_dir), str(images), "--out", str(tmp_path / "plain.jsonl")]) == 1
    expected = jsonl(tmp_path / "plain.jsonl")
    first = [r["path"] for r in expected[:20]]
    # A resumed run's exit status is the whole output's: 1 while any row in it (earlier ones included) is an error.
    first_exit, whole_exit = int(any(r["error"] for r in expected[:20])), int(any(r["error"] for r in expected))
    assert main(["score", str(model_dir), *first, *RAY, "--out", str(out), "--quiet"]) == first_exit
    text = out.read_text()
    out.write_text(text + text.splitlines()[0][:15])  # a torn last line, as a killed run leaves it
    assert main(["score", str(model_dir), str(images), *RAY, "--out", str(out), "--resume", "--quiet"]) == whole_exit
    rows = jsonl(out)
    assert sorted(rows, key=lambda r: r["path"]) == sorted(expected, key=lambda r: r["path"])
    # and again with nothing left to do: Parquet too
    assert main(["score", str(model_dir), str(images), *RAY, "--out", str(out), "--resume", "--quiet"]) == whole_exit
    assert jsonl(out) == rows
    pout = tmp_path / "ray.parquet"
    assert main(["score", str(model_dir), *first, *RAY, "--out", str(pout), "--quiet"]) == first_exit
    assert main(["score", str(model_dir), str(images), *RAY, "--out", str(pout), "--resume", "--quiet"]) == whole_exit
    assert sorted(pq.read_table(pout).to_pylist(), key=lambda r: r["path"]) == sorted(expected, key=lambda r: r["path"])


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _actor_pids() -> list[int]:
    """Processes running the scoring actor (Ray names them after the class) of this test's own cluster: descendants
    of this process, never another Ray's on the same machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ScoreActor" not in (entry / "cmdline").read_bytes():
                continue
            pid = int(entry.name)
            while pid > 1 and pid != os.getpid():
                pid = _parent(pid)
        except (OSError, ValueError):
            continue
        if pid == os.getpid() and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the actor's process through /proc")
def test_a_killed_actor_is_restarted_and_every_input_appears_once(cluster, model_dir, images, tmp_path) -> None:
    files = sorted(str(p) for p in images.rglob("*.png"))
    files = files * 6  # enough batches that the kill lands mid-run
    ds = scale.score_inputs(files, model_dir, actors=1, threads=1, batch_size=4, engine="torch")
    killed: list[int] = []
    replaced = False
    rows = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows.extend(batch.to_pylist())
        if not killed:
            pids = _actor_pids()
            assert pids, "no actor process found"
            os.kill(pids[0], signal.SIGKILL)  # a real kill, as the OOM killer or a lost node does it
            killed.append(pids[0])
        else:
            replaced = replaced or any(pid not in killed for pid in _actor_pids())
    assert killed and replaced  # the run went on in a new actor process after the kill
    # each input exactly once (every file six times, as given), with the scores of a run without a kill
    assert sorted(r["path"] for r in rows) == sorted(files)
    torch.set_num_threads(1)
    try:
        from discopatch.detector import Detector

        det = Detector.load(model_dir, engine="torch", device="cpu")
        want = {r["path"]: r["score"] for r in det.iter_score_files(sorted(set(files)))}
    finally:
        torch.set_num_threads(2)
    assert all(r["score"] == want[r["path"]] for r in rows)
    assert killed[0] not in _actor_pids()


def test_score_dataset_on_a_users_dataset_of_bytes(cluster, trained_detector, images) -> None:
    files = sorted(str(p) for p in images.glob("*.*"))
    # what read_binary_files(..., include_paths=True) gives, plus a key of the caller's
    ds = ray.data.from_items([{"path": f, "bytes": Path(f).read_bytes(), "key": f"k{i}"} for i, f in enumerate(files)])
    out = scale.score_dataset(ds, trained_detector, bytes_column="bytes", actors=1, threads=1, engine="torch")
    rows = sorted(out.take_all(), key=lambda r: r["key"])
    assert [r["key"] for r in rows] == sorted(f"k{i}" for i in range(len(files)))  # the caller's key survives
    assert "bytes" not in rows[0]
    torch.set_num_threads(1)
    try:
        from discopatch.detector import Detector

        det = Detector.load(trained_detector.save(images.parent / "det-copy"), engine="torch", device="cpu")
        want = {r["path"]: r for r in det.iter_score_files(files)}
    finally:
        torch.set_num_threads(2)
    for r in rows:
        w = want[r["path"]]
        assert (r["score"], r["p_value"], r["model_id"]) == (w["score"], w["p_value"], w["model_id"])
        if w["error"]:
            assert r["error"] == w["error"]


def test_bad_options_are_refused_before_any_work(model_dir, images, tmp_path, capsys) -> None:
    base = ["score", str(model_dir), str(images), "--ray", "auto"]
    assert main([*base, "--out", str(tmp_path / "x.txt")]) == 2
    assert "--out must end in .csv, .jsonl or .parquet" in capsys.readouterr().err
    assert main([*base, "--heatmaps", str(tmp_path / "maps")]) == 2
    assert main([*base, "--ray-actors", "0"]) == 2
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "maps").exists()
    # a damaged detector is refused on the driver, with the artefact's exit status, before a cluster is involved
    (tmp_path / "bad").mkdir()
    assert main(["score", str(tmp_path / "bad"), str(images), "--ray", "auto", "--out", str(tmp_path / "y.csv")]) == 4
    assert "detector.json" in capsys.readouterr().err


def test_a_legacy_detector_is_scored_only_when_allowed(cluster, model_dir, images, tmp_path) -> None:
    """``--allow-legacy-artifact`` reaches the driver's check and every actor, as it does for plain ``score``."""
    legacy = tmp_path / "legacy"
    shutil.copytree(model_dir, legacy)
    meta = json.loads((legacy / "detector.json").read_text())
    del meta["digest"]
    (legacy / "detector.json").write_text(json.dumps(meta))
    files = [str(p) for p in sorted(images.glob("img00*.png"))]
    out = tmp_path / "legacy.jsonl"
    assert main(["score", str(legacy), *files, *RAY, "--out", str(out), "--quiet"]) == 4
    assert main(["score", str(legacy), *files, *RAY, "--out", str(out), "--quiet", "--allow-legacy-artifact"]) == 0
    assert len(jsonl(out)) == len(files) and all(r["error"] is None for r in jsonl(out))
