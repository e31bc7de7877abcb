"""OpenOOD-style image lists, the ImageNet-C folder layout and the labelled official pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from discopatch.cli import main
from discopatch.config import PreprocessConfig
from discopatch.evaluation.reproduce import (
    imagenet_c_sources,
    list_source,
    parse_list_line,
    pipeline_config,
    source_from_spec,
)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_parse_list_lines() -> None:
    assert parse_list_line("imagenet_1k/val/a.JPEG 65") == "imagenet_1k/val/a.JPEG"
    assert parse_list_line("  ninco/x y.jpg  3 ") == "ninco/x y.jpg"
    assert parse_list_line("texture/banded_0002.jpg") == "texture/banded_0002.jpg"
    assert parse_list_line("# comment") is None and parse_list_line("   ") is None


def test_list_source_resolves_against_data_root(tmp_path: Path) -> None:
    _save(tmp_path / "root" / "set" / "a.png", np.zeros((8, 8), np.uint8))
    lst = tmp_path / "lists" / "test_set.txt"
    lst.parent.mkdir()
    lst.write_text("# OpenOOD list\nset/a.png 1\nset/missing.png 2\n\n")
    src = list_source("set", lst, tmp_path / "root")
    assert src.names == ["set/a.png", "set/missing.png"]
    assert src.files[0].is_file() and not src.files[1].exists()
    assert source_from_spec(f"S={lst}", tmp_path / "root").name == "S"
    other = source_from_spec(f"S={lst}", tmp_path / "root", roots={"S": str(tmp_path / "elsewhere")})
    assert other.files[0] == tmp_path / "elsewhere" / "set" / "a.png"
    with pytest.raises(FileNotFoundError):
        source_from_spec(str(tmp_path / "nope.txt"), None)


def test_imagenet_c_layout(tmp_path: Path) -> None:
    for corr in ("gaussian_noise", "fog"):
        for sev in (1, 2, 10):
            _save(tmp_path / corr / str(sev) / "n01440764" / "x.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "fog" / "notes").mkdir()
    names = [s.name for s in imagenet_c_sources(tmp_path)]
    assert names == [f"{c}/{s}" for c in ("fog", "gaussian_noise") for s in (1, 2, 10)]
    with pytest.raises(ValueError):
        imagenet_c_sources(tmp_path / "fog" / "1" / "n01440764")


def test_official_pipeline_configs() -> None:
    base = PreprocessConfig(image_size=64, channels=3, resize="pad")
    assert pipeline_config(base, "ood", official=False) == base
    assert pipeline_config(base, "id", official=True).resize == "resize_crop"
    assert pipeline_config(base, "ood", official=True).resize == "squash"
    assert pipeline_config(base, "imagenet-c", official=True).resize == "squash"


def test_cli_evaluate_lists_and_imagenet_c(trained_detector, fmnist, tmp_path: Path, capsys) -> None:
    model = tmp_path / "model"
    trained_detector.save(model)
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    id_lines, ood_lines = [], []
    for i, img in enumerate(fmnist.test_images[:24]):
        _save(data / "id" / f"{i}.png", img)
        id_lines.append(f"id/{i}.png {i % 10}")
    for i in range(12):
        _save(data / "noise" / f"{i}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
        ood_lines.append(f"noise/{i}.png")
    for sev in (1, 2):
        for i, img in enumerate(fmnist.test_images[24:32]):
            noisy = np.clip(img.astype(int) + rng.integers(-40 * sev, 40 * sev, img.shape), 0, 255).astype(np.uint8)
            _save(data / "inc" / "gaussian_noise" / str(sev) / "c0" / f"{i}.png", noisy)
    (tmp_path / "id.txt").write_text("\n".join(id_lines) + "\n")
    (tmp_path / "noise.txt").write_text("\n".join([*ood_lines, "noise/missing.png"]) + "\n")
    js = tmp_path / "res.json"
    args = ["evaluate", str(model), "--id-list", str(tmp_path / "id.txt"), "--data-root", str(data)]
    args += ["--ood", f"noise={tmp_path / 'noise.txt'}", "--imagenet-c", str(data / "inc"), "--json", str(js)]
    assert main([*args, "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "matched pipeline" in out.out and "gaussian_noise/2" in out.out and "ImageNet-C mean" in out.out
    assert "1 unreadable" in out.err
    res = json.loads(js.read_text())
    mean_name = "ImageNet-C mean (2 corruption x severity sets)"
    assert set(res["ood"]) == {"noise", "gaussian_noise/1", "gaussian_noise/2", mean_name}
    assert res["ood"]["noise"]["n_ood"] == 12 and res["id"]["n"] == 24
    per_set = [res["ood"][f"gaussian_noise/{s}"]["auroc"] for s in (1, 2)]
    assert res["ood"][mean_name]["auroc"] == pytest.approx(np.mean(per_set))
    assert main([*args, "--official-pipeline"]) == 0
    assert "NOT leak-free" in capsys.readouterr().out
    assert "NOT leak-free" in json.loads(js.read_text())["meta"]["pipeline"]
