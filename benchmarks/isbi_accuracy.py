"""Membrane accuracy of the default configuration on ISBI 2012, for a time budget.

Trains on sections 00-19 (validation 20-24) for ``--minutes`` and scores the best
epoch's bundle on sections 25-29: membrane F1 and pixel error over all pixels, and the
2D segmentation's variation of information (split, merge) and adapted Rand error
(means over the sections, as in the ISBI 2012 challenge).
Target (issue 3): membrane F1 >= 0.83 with a 10-minute CPU budget on a 2-core machine.

    python benchmarks/isbi_accuracy.py --minutes 10 [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from membraind.config import load_settings
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import load_ground_truth
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import load_bundle
from membraind.nn.evaluate import EvaluationResult, make_runtime
from membraind.nn.training_setup import build_trainer

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="run folder (default: a temporary one)")
    args = parser.parse_args()

    images = load_ground_truth(args.isbi / "train" / "image", args.isbi / "train" / "label", LabelMapping.preset("isbi"))
    data = TrainingData(images[:20], images[20:25], [])
    settings = load_settings()
    training = settings.training.model_copy(update={"max_minutes": args.minutes, "epochs": 10_000, "device": args.device})
    out = args.out or Path(tempfile.mkdtemp(prefix="isbi-accuracy-"))

    started = time.monotonic()
    trainer = build_trainer(
        out, data, training, unet=settings.unet, normalization=settings.normalization, sampler=settings.sampler,
        augmentation=settings.augmentation, name="isbi-benchmark",
    )  # fmt: skip
    bundle_path = trainer.run()
    minutes = (time.monotonic() - started) / 60
    bundle = load_bundle(bundle_path)
    history = bundle.metadata.history
    steps = len(history) * training.steps_per_epoch
    patches_per_s = steps * training.batch_size / max(history[-1]["seconds"], 1e-9)

    runtime = make_runtime(bundle, "torch", str(trainer.device))
    result = EvaluationResult()
    for gt in images[25:]:
        probabilities = runtime(bundle.metadata.normalization.normalize_section(gt.em))
        result.add(gt.name, probabilities, bundle.metadata.membrane_channel, gt.labels, settings.segment2d)
    print(result.table())
    total, instances = result.total, result.mean_instances()
    print(
        f"device {trainer.device}, {len(history)} epochs x {training.steps_per_epoch} steps x "
        f"{training.batch_size} patches of {bundle.metadata.patch_size} px, {bundle.metadata.outcome.describe()}, "
        f"architecture {bundle.metadata.architecture.model_dump()}"
    )
    print(
        f"RESULT membrane_f1={total.membrane_f1:.4f} pixel_error={1 - total.accuracy:.4f} "
        f"vi_split={instances.vi_split:.4f} vi_merge={instances.vi_merge:.4f} adapted_rand={instances.adapted_rand:.4f} "
        f"patches_per_s={patches_per_s:.1f} minutes={minutes:.2f}"
    )


if __name__ == "__main__":
    main()
