"""The demo's detector at another budget or with training levers: train as ``discopatch demo`` does, evaluate on the
demo's sets, write ``OUT/results_STEPS.json``.

``discopatch demo`` trains ``fit``'s budget with the ``small`` preset as it is. This trains the same way with
``TrainConfig`` overrides (``--extra``) and, where ``OUT/checkpoints`` holds an earlier run of the same settings,
resumes it instead of repeating its steps (a resumed run continues the uninterrupted schedule:
docs/RELIABILITY.md)::

    OMP_NUM_THREADS=1 python scripts/demo_resume.py demo0 --seed 0 --steps 1380 --extra '{"lecam": 0.01}'
    OMP_NUM_THREADS=1 python scripts/demo_resume.py demo0 --seed 0 --steps 2760 --extra '{"lecam": 0.01}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from discopatch.data.builtin import load_demo_fashion_mnist
from discopatch.data.demo_sets import build_demo_sets
from discopatch.detector import Detector
from discopatch.evaluation.evaluate import evaluate
from discopatch.presets import get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the demo's --out folder (its checkpoints/ is resumed)")
    parser.add_argument("--seed", type=int, required=True, help="the demo's --seed")
    parser.add_argument("--steps", type=int, required=True, help="total training steps to reach")
    parser.add_argument("--extra", default="{}", help="TrainConfig overrides as JSON, e.g. '{\"lecam\": 0.01}'")
    args = parser.parse_args()
    det = Detector(get_preset("small", channels=1), device="cpu", seed=args.seed)
    checkpoints = args.out / "checkpoints"
    det.fit(
        load_demo_fashion_mnist().train_images,
        max_steps=args.steps,
        max_time=7200,
        checkpoint_dir=checkpoints,
        resume=(checkpoints / "checkpoint.json").exists(),
        progress=False,
        **json.loads(args.extra),
    )
    reference, sets = build_demo_sets(det.preprocess_config, seed=args.seed)
    res = evaluate(det, reference, sets, id_name="Fashion-MNIST test (reference)")
    print(res.table())
    result = {**res.to_dict(), "training": det.training_info, "seed": args.seed}
    (args.out / f"results_{args.steps}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
