"""Small-data fine-tuning defaults by measurement: transfer mode, learning rate, and time.

The starter model (``--parent``, default the packaged one) is fine-tuned on 3 synthetic
sections in another lab's look (``OTHER_LAB``, a seed of its own, so the transfer
benchmark's test sections stay unseen), painted with brush-stroke discs over
``--coverages``; each run has ``--minutes``, or ``--steps`` optimizer steps (fair between
runs on a CPU that other jobs share). Scored (membrane F1) on 3 further sections.
Validation is one fully labelled section, every 25 steps, so each run's history also
says how F1 grew: the table gives the best validation F1 reached within a quarter, half
and all of the run's epochs.

    nice -n 10 python benchmarks/finetune_defaults.py [--minutes 2 | --steps 300] [--coverages 0.15]
        [--modes continue,leaky,freeze-encoder] [--rates 0.002,0.0005]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

from membraind.config import load_settings
from membraind.demo.brush import brush_discs
from membraind.demo.lab_looks import OTHER_LAB, synthetic_ground_truth
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import load_bundle
from membraind.nn.evaluate import membrane_f1
from membraind.nn.settings import TransferSettings
from membraind.nn.starter import require_starter
from membraind.nn.training_setup import build_trainer


def painted(gt: GroundTruthImage, coverage: float, seed: int) -> GroundTruthImage:
    """``gt`` labelled only under brush discs over ``coverage`` (1: fully)."""
    if coverage >= 1:
        return gt
    mask = brush_discs(gt.labels.shape, coverage, seed=seed)
    return GroundTruthImage(gt.name, gt.em, np.where(mask, gt.labels, UNANNOTATED).astype(np.uint8))


def best_by(history: list[dict], share: float) -> float:
    """The best validation membrane F1 reached within the first ``share`` of the run's epochs."""
    return max(r["val_membrane_f1"] for r in history[: max(1, math.ceil(share * len(history)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=Path, help="the bundle to fine-tune (default: the starter model)")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--steps", type=int, help="train this many steps instead of --minutes")
    parser.add_argument("--coverages", default="0.15", help="painted shares, comma-separated (1 = full labels)")
    parser.add_argument("--modes", default="continue,leaky,freeze-encoder")
    parser.add_argument("--rates", default="0.002,0.0005", help="peak learning rates, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="finetune-defaults-"))
    base = load_settings()
    parent = load_bundle(args.parent or require_starter())
    lab = synthetic_ground_truth(31, 7, OTHER_LAB, name="other-lab")
    test = lab[4:]
    per_epoch = 25
    limit = ({"max_minutes": None, "epochs": math.ceil(args.steps / per_epoch)} if args.steps
             else {"max_minutes": args.minutes, "epochs": 10_000})  # fmt: skip
    training = base.training.model_copy(update={**limit, "steps_per_epoch": per_epoch, "device": args.device})

    print(f"{'coverage':>8s} {'mode':15s} {'rate':>7s} {'steps':>6s} {'val@25%':>8s} {'val@50%':>8s} "
          f"{'val@100%':>8s} {'test F1':>8s}")  # fmt: skip
    results = []
    for coverage in (float(c) for c in args.coverages.split(",")):
        data = TrainingData([painted(gt, coverage, k) for k, gt in enumerate(lab[:3])], [lab[3]], [])
        for mode in args.modes.split(","):
            for rate in (float(r) for r in args.rates.split(",")):
                folder = out / f"c{coverage}-{mode}-{rate}"
                transfer = TransferSettings(mode=mode, learning_rate=rate)
                bundle = load_bundle(build_trainer(folder, data, training, parent=parent, transfer=transfer).run())
                history = bundle.metadata.history
                f1 = membrane_f1(bundle, test)
                steps = len(history) * training.steps_per_epoch
                results.append((f1, coverage, mode, rate))
                print(f"{coverage:8.2f} {mode:15s} {rate:7.4f} {steps:6d} {best_by(history, 0.25):8.4f} "
                      f"{best_by(history, 0.5):8.4f} {best_by(history, 1.0):8.4f} {f1:8.4f}", flush=True)
    parent_f1 = membrane_f1(parent, test)
    best = max(results)
    print(f"parent unchanged: {parent_f1:.4f}")
    print(f"RESULT best_f1={best[0]:.4f} best_mode={best[2]} best_rate={best[3]} coverage={best[1]} "
          f"parent_f1={parent_f1:.4f}")


if __name__ == "__main__":
    main()
