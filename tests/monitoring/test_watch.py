"""``discopatch monitor``: folder watching and stdin paths into the same database, without rescoring."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np

from discopatch.cli import main
from discopatch.monitoring.drift import DriftConfig
from discopatch.monitoring.store import Store, StreamNotFound
from discopatch.monitoring.streams import StreamRecorder
from discopatch.monitoring.watch import Watcher


def _write(folder: Path, pngs: list[bytes], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, b in enumerate(pngs):
        p = folder / f"{prefix}{i:03d}.png"
        # written beside the folder and moved in whole: a watcher polling with settle=0 never sees half a file
        part = folder.parent / f".{folder.name}-{p.name}.part"
        part.write_bytes(b)
        part.replace(p)
        paths.append(p)
    return paths


def _recorded(store: Store, stream: str) -> int:
    try:
        return store.stream_info(stream)["n_images"]
    except StreamNotFound:
        return 0


def _args(model_dir: Path, db: str, *extra: str) -> list[str]:
    return ["monitor", str(model_dir), "--db", db, "--device", "cpu", "--window", "30", "--min-window", "10", *extra]


def test_watch_once_scores_each_file_once(model_dir, tmp_path, id_pngs, capsys) -> None:
    folder, db = tmp_path / "in", f"sqlite:///{tmp_path / 'w.db'}"
    _write(folder, id_pngs[:10], "a")
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(_args(model_dir, db, "--watch", str(folder), "--once", "--stream", "cam")) == 0
    out = capsys.readouterr()
    rows = [json.loads(x) for x in out.out.splitlines()]
    assert len(rows) == 11
    assert {r["source_id"] for r in rows} == {str(p.absolute()) for p in folder.iterdir()}
    assert [r["error"] is not None for r in rows].count(True) == 1
    assert json.loads(out.err.strip().splitlines()[-1]) == {"stream": "cam", "scored": 10, "errors": 1, "skipped": 0,
                                                           "is_drift": False}  # fmt: skip

    # A second run finds everything recorded; new files are the only ones scored.
    _write(folder / "sub", id_pngs[10:13], "b")
    assert main(_args(model_dir, db, "--watch", str(folder), "--once", "--stream", "cam", "--quiet")) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["scored"] == 3
    store = Store(db)
    rows = store.images("cam", limit=100)
    store.close()
    assert len(rows) == 14 and len({r["source_id"] for r in rows}) == 14


def test_stdin_paths(model_dir, tmp_path, id_pngs, blank_png, monkeypatch, capsys) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    paths = _write(tmp_path / "imgs", id_pngs[:20], "id") + _write(tmp_path / "imgs", [blank_png] * 25, "blank")
    lines = "\n".join(str(p) for p in paths) + "\n\n" + str(paths[0]) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(_args(model_dir, db, "--stdin", "--stream", "pipe")) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 45
    summary = json.loads(out.err.strip().splitlines()[-1])
    assert summary == {"stream": "pipe", "scored": 45, "errors": 0, "skipped": 1, "is_drift": True}
    assert "ALERT pipe: drift" in out.err


def test_polling_picks_up_new_files(trained_detector, tmp_path, id_pngs) -> None:
    folder = tmp_path / "live"
    folder.mkdir()
    rec = StreamRecorder(trained_detector, Store(tmp_path / "p.db"), DriftConfig(window_size=20, min_window=5))
    watcher = Watcher(rec, "live")
    stop = threading.Event()
    thread = threading.Thread(target=watcher.watch, args=(folder,), kwargs={"poll": 0.05, "settle": 0.0, "stop": stop})
    thread.start()
    try:
        for batch in range(3):
            _write(folder, id_pngs[batch * 4 : batch * 4 + 4], f"b{batch}-")
            deadline = time.monotonic() + 30
            while _recorded(rec.store, "live") < 4 * (batch + 1):
                assert time.monotonic() < deadline, "the watcher did not pick up the new files"
                time.sleep(0.05)
    finally:
        stop.set()
        thread.join(30)
    rows = rec.store.images("live")
    rec.close()
    assert len(rows) == 12 and len({r["source_id"] for r in rows}) == 12
    np.testing.assert_allclose(
        [r["score"] for r in rows], trained_detector.score([id_pngs[i] for i in range(12)]), rtol=1e-9
    )
