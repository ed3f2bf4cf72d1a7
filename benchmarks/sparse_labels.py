"""Brush strokes against full labels, with and without learning from the unpainted pixels.

ISBI 2012 sections 00-02 with seeded brush-stroke discs covering ``--coverage`` (15%) of
each section, against the same sections fully labelled, for the same time budget
(``--minutes`` per run); validation on section 03 painted the same way as the training
sections (a lab validates on its own strokes), scored on sections 25-29 (all pixels).
Each comparison runs twice: from scratch, and fine-tuning a parent that has never seen
ISBI (trained here for ``--parent-minutes`` on synthetic EM only). Runs:

- ``full``: the sections fully labelled (the default configuration);
- ``sparse``: brush strokes, unpainted-pixel learning on;
- ``sparse_plain``: brush strokes, unpainted-pixel learning off, the same patches
  (they reach into unpainted EM, ``min_painted`` 0.05), so only the term differs.

The RESULT line's first four keys are the fine-tuned runs (the lab's case: a first
version starts from a parent); ``scratch_*`` keys repeat them from scratch.
Target (issue 20): ratio = sparse_f1 / full_f1 >= 0.95, and sparse_f1 > sparse_f1_plain.

    nice -n 10 python benchmarks/sparse_labels.py [--minutes 2] [--parent-minutes 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from membraind.config import load_settings
from membraind.demo.brush import brush_discs
from membraind.demo.lab_looks import LabLook, synthetic_ground_truth
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import Bundle, load_bundle
from membraind.nn.evaluate import membrane_f1
from membraind.nn.settings import TransferSettings
from membraind.nn.training_setup import build_trainer

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
PARTIAL = 0.05  # min_painted of the brush-stroke runs


def brushed(gt: GroundTruthImage, coverage: float, seed: int) -> GroundTruthImage:
    """``gt`` with its labels kept only under seeded brush-stroke discs covering ``coverage``."""
    painted = brush_discs(gt.labels.shape, coverage, seed=seed)
    return GroundTruthImage(gt.name, gt.em, np.where(painted, gt.labels, UNANNOTATED).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--minutes", type=float, default=2.0, help="budget of every run")
    parser.add_argument("--parent-minutes", type=float, default=3.0, help="budget of the synthetic-only parent")
    parser.add_argument("--coverage", type=float, default=0.15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sparse-labels-"))
    base = load_settings()

    def training(minutes: float, unpainted: str):
        return base.training.model_copy(update={
            "max_minutes": minutes, "epochs": 10_000, "device": args.device,
            "unpainted": base.training.unpainted.model_copy(update={"mode": unpainted}),
        })  # fmt: skip

    isbi = load_ground_truth(args.isbi / "train" / "image", args.isbi / "train" / "label", LabelMapping.preset("isbi"))
    full = TrainingData(isbi[:3], isbi[3:4], [])
    sparse = TrainingData([brushed(gt, args.coverage, k) for k, gt in enumerate(isbi[:3])],
                          [brushed(isbi[3], args.coverage, 3)], [])  # fmt: skip
    test = isbi[25:30]
    runs = {  # name: (data, unpainted mode, min_painted)
        "full": (full, "off", None),
        "sparse": (sparse, "on", PARTIAL),
        "sparse_plain": (sparse, "off", PARTIAL),
    }

    synthetic = [gt for k, d in enumerate((45.0, 70.0, 110.0)) for gt in synthetic_ground_truth(201 + k, 4, LabLook(cell_diameter=d))]
    parent_data = TrainingData([gt for k, gt in enumerate(synthetic) if k % 4], synthetic[::4], [])
    parent = load_bundle(build_trainer(out / "parent", parent_data, training(args.parent_minutes, "off"),
                                       name="synthetic-parent").run())  # fmt: skip

    def run(name: str, start: Bundle | None) -> float:
        data, mode, min_painted = runs[name]
        sampler = base.sampler.model_copy(update={"min_painted": min_painted})
        folder = out / ("finetune" if start else "scratch") / name
        trainer = build_trainer(folder, data, training(args.minutes, mode), sampler=sampler,
                                augmentation=base.augmentation, parent=start,
                                transfer=TransferSettings() if start else None)  # fmt: skip
        bundle = load_bundle(trainer.run())
        steps = len(bundle.metadata.history) * base.training.steps_per_epoch
        print(f"  {folder.relative_to(out)}: {bundle.metadata.outcome.describe()} (~{steps} steps, "
              f"patch {bundle.metadata.patch_size} px)", flush=True)  # fmt: skip
        return membrane_f1(bundle, test)

    scores = {start: {name: run(name, parent if start == "finetune" else None) for name in runs}
              for start in ("finetune", "scratch")}  # fmt: skip
    parent_f1 = membrane_f1(parent, test)
    print(f"\nISBI 00-02 ({args.coverage:.0%} brush discs or full), {args.minutes} min per run, "
          f"membrane F1 on sections 25-29; parent (synthetic only, {args.parent_minutes} min) unchanged: {parent_f1:.4f}")
    print(f"{'start':10s} {'full':>8s} {'sparse':>8s} {'plain':>8s} {'ratio':>7s}")
    for start, f1 in scores.items():
        print(f"{start:10s} {f1['full']:8.4f} {f1['sparse']:8.4f} {f1['sparse_plain']:8.4f} "
              f"{f1['sparse'] / f1['full']:7.3f}")
    ft, sc = scores["finetune"], scores["scratch"]
    print(f"RESULT sparse_f1={ft['sparse']:.4f} full_f1={ft['full']:.4f} ratio={ft['sparse'] / ft['full']:.4f} "
          f"sparse_f1_plain={ft['sparse_plain']:.4f} scratch_sparse_f1={sc['sparse']:.4f} "
          f"scratch_full_f1={sc['full']:.4f} scratch_ratio={sc['sparse'] / sc['full']:.4f} "
          f"scratch_sparse_f1_plain={sc['sparse_plain']:.4f} parent_f1={parent_f1:.4f}")


if __name__ == "__main__":
    main()
