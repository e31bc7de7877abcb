"""Export parity of a detector on the score's own scale, as ``discopatch export --check`` judges it, for its own score
mode and for D's score alone (recalibrated on ID images), under whatever CPU settings the environment forces.

    python scripts/export_parity.py MODEL CALIBRATION_DIR CHECK_DIR
    ATEN_CPU_CAPABILITY=default python scripts/export_parity.py MODEL CALIBRATION_DIR CHECK_DIR
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/export_parity.py MODEL CALIBRATION_DIR CHECK_DIR

Prints one JSON line per score mode: the largest |ONNX Runtime - PyTorch| difference, the calibration spread, their
ratio and the decisions that differ (docs/RELIABILITY.md, "Same scores on every CPU").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

from discopatch.data.images import list_images
from discopatch.detector import Detector
from discopatch.inference.export import check_export, export_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("calibration_dir", help="ID images to recalibrate D's own score on (at most 400 used)")
    ap.add_argument("check_dir", help="images to compare on (at most 256 used)")
    args = ap.parse_args()
    files = list_images(args.check_dir)[:256]
    for mode in ("fused", "d-only"):
        det = Detector.load(args.model, device="cpu", engine="torch")
        if mode != det.preset.score_mode:
            det.preset = det.preset.replace(score_mode=mode)
            det.calibrate(list_images(args.calibration_dir)[:400])
        with tempfile.TemporaryDirectory() as tmp:
            check = check_export(det, export_detector(det, os.path.join(tmp, "m.onnx")), files)
        print(json.dumps({
            "mode": mode, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""), "threads": torch.get_num_threads(),
            "max_abs_diff": check.max_abs_diff, "spread": check.scale, "share_of_spread": check.relative_diff,
            "decisions_differ": check.decisions_differ, "decisions_compared": check.decisions_compared,
        }))  # fmt: skip


if __name__ == "__main__":
    main()
