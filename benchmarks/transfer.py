"""The benefit of transfer learning: fine-tuning vs training from scratch on 2 sections.

A parent network trained on ISBI 2012 (``--parent BUNDLE``, or trained here for
``--parent-minutes``) meets synthetic EM with a different look. With only 2 labelled
sections of it, compare for the same time budget (``--minutes``):

- ``finetune``: the parent fine-tuned (``--mode``, default continue);
- ``scratch``: a new network of the same architecture;
- ``parent``: the parent applied unchanged.

All three are scored (membrane F1) on 3 further synthetic sections; the generator's
extracellular space is left out of training and scoring.

    python benchmarks/transfer.py [--parent BUNDLE] [--minutes 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from membraind.config import load_settings
from membraind.demo.synthetic_em import generate_stack
from membraind.groundtruth.classes import THIRD, UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import Bundle, load_bundle
from membraind.nn.evaluate import make_runtime, score
from membraind.nn.settings import TransferSettings
from membraind.nn.training_setup import build_trainer
from membraind.segment.metrics import ConfusionCounts

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def membrane_f1(bundle: Bundle, images: list[GroundTruthImage], device: str) -> float:
    """Membrane F1 of ``bundle`` over the annotated pixels of ``images``."""
    runtime = make_runtime(bundle, "torch", device)
    total = ConfusionCounts()
    for gt in images:
        total += score(runtime(bundle.metadata.normalization.normalize_section(gt.em)), gt.labels)
    return total.membrane_f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--parent", type=Path, help="an ISBI-trained bundle (default: train one here)")
    parser.add_argument("--parent-minutes", type=float, default=6.0)
    parser.add_argument("--minutes", type=float, default=3.0, help="budget of fine-tuning and of scratch training")
    parser.add_argument("--mode", default="continue", help="transfer mode of the fine-tuning")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="transfer-"))
    base = load_settings()
    sections = {"unet": base.unet, "normalization": base.normalization, "sampler": base.sampler,
                "augmentation": base.augmentation}  # fmt: skip

    def training_for(minutes: float):
        return base.training.model_copy(update={"max_minutes": minutes, "epochs": 10_000, "device": args.device})

    if args.parent:
        parent = load_bundle(args.parent)
    else:
        isbi = load_ground_truth(args.isbi / "train" / "image", args.isbi / "train" / "label", LabelMapping.preset("isbi"))
        trainer = build_trainer(out / "parent", TrainingData(isbi[:20], isbi[20:25], []),
                                training_for(args.parent_minutes), **sections)
        parent = load_bundle(trainer.run())

    stack = generate_stack(seed=11, sections=6)
    labels = np.where(stack.labels == THIRD, UNANNOTATED, stack.labels).astype(np.uint8)
    synthetic = [GroundTruthImage(f"{z:03d}", stack.em[z], labels[z]) for z in range(6)]
    data = TrainingData(synthetic[:2], synthetic[2:3], [])
    test = synthetic[3:]

    device = args.device
    finetuned = load_bundle(
        build_trainer(out / "finetune", data, training_for(args.minutes), **sections, parent=parent,
                      transfer=TransferSettings(mode=args.mode)).run()
    )
    scratch_sections = {**sections, "unet": parent.metadata.architecture,
                        "sampler": base.sampler.model_copy(update={"patch_size": parent.metadata.patch_size})}
    scratch = load_bundle(build_trainer(out / "scratch", data, training_for(args.minutes), **scratch_sections).run())

    results = {name: membrane_f1(b, test, "cpu" if device == "auto" else device)
               for name, b in (("finetune", finetuned), ("scratch", scratch), ("parent", parent))}
    print(f"{'model (2 synthetic sections, ' + str(args.minutes) + ' min)':40s} {'membrane F1':>12s}")
    for name, f1 in results.items():
        print(f"{name:40s} {f1:12.4f}")
    print(f"RESULT finetune_f1={results['finetune']:.4f} scratch_f1={results['scratch']:.4f} "
          f"parent_f1={results['parent']:.4f}")


if __name__ == "__main__":
    main()
