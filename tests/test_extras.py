"""A missing optional extra stops its command with a one-line install hint, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from discopatch.cli import main

CASES = [
    (["serve", "MODEL"], "fastapi", "serve"),
    (["serve", "MODEL", "--db", "postgresql://u@localhost/db"], "psycopg", "postgres"),
    (["monitor", "MODEL", "--watch", "."], "sqlalchemy", "serve"),
    (["export", "MODEL", "--out", "m.onnx"], "onnxruntime", "onnx"),
    (["benchmark", "--protocol", "fmnist", "--quick", "--out", "OUT"], "matplotlib", "bench"),
    (["evaluate", "MODEL", "--id", "MODEL", "--ood", "MODEL", "--report", "OUT"], "matplotlib", "bench"),
    (["score", "MODEL", "MODEL", "--ray", "auto", "--out", "OUT/x.csv"], "ray", "ray"),
]


@pytest.mark.parametrize(("argv", "hidden", "extra"), CASES)
def test_missing_extra_gives_a_one_line_hint(argv, hidden, extra, monkeypatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, hidden, None)  # "import hidden" now raises ModuleNotFoundError
    argv = [str(tmp_path / a) if a in ("MODEL", "OUT") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert repr(hidden) in err and f"pip install 'discopatch[{extra}]'" in err
    assert not (tmp_path / "OUT").exists()  # stopped before any work


def test_a_module_hidden_by_an_import_finder_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # A fresh interpreter where uvicorn cannot be found at all (meta-path finder), run through the entry point.
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'uvicorn':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from discopatch.cli import main\n"
        f"sys.exit(main(['serve', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "discopatch serve: error: missing optional dependency 'uvicorn'; "
        "install it with: pip install 'discopatch[serve]'"
    ]


def test_other_import_errors_are_not_disguised(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "discopatch.evaluation.demo", None)
    with pytest.raises(ModuleNotFoundError):
        main(["demo", "--out", "x"])
