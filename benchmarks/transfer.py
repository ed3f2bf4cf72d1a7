"""The benefit of transfer learning: fine-tuning vs training from scratch on 2 sections.

A parent network trained on ISBI 2012 (``--parent BUNDLE``, or trained here for
``--parent-minutes``) meets synthetic EM with a different look. With only 2 labelled
sections of it, compare for the same time budget (``--minutes``):

- ``finetune``: the parent fine-tuned (``--mode``, default continue);
- ``scratch``: a new network of the same architecture;
- ``parent``: the parent applied unchanged.

All three are scored (membrane F1) on 3 further synthetic sections; the generator's
extracellular space is left out of training and scoring.

``--starter`` is the starter model's test (issue 20): the parent is the starter model
shipped with membraind (``--parent`` to name another), and the synthetic EM has a look
clearly unlike ISBI (``OTHER_LAB``: finer pixels, bright and flat contrast, blur, noise).

    python benchmarks/transfer.py [--parent BUNDLE] [--minutes 3] [--device cpu]
    python benchmarks/transfer.py --starter [--minutes 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from membraind.config import load_settings
from membraind.demo.lab_looks import OTHER_LAB, LabLook, synthetic_ground_truth
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import load_ground_truth
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import load_bundle
from membraind.nn.evaluate import membrane_f1
from membraind.nn.starter import require_starter
from membraind.nn.training_setup import build_trainer

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--parent", type=Path, help="an ISBI-trained bundle (default: train one here)")
    parser.add_argument("--parent-minutes", type=float, default=6.0)
    parser.add_argument("--minutes", type=float, default=3.0, help="budget of fine-tuning and of scratch training")
    parser.add_argument("--mode", help="transfer mode of the fine-tuning (default: config)")
    parser.add_argument("--starter", action="store_true", help="the starter model on EM in another lab's look")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="transfer-"))
    base = load_settings()
    sections = {"unet": base.unet, "normalization": base.normalization, "sampler": base.sampler,
                "augmentation": base.augmentation}  # fmt: skip

    def training_for(minutes: float):
        return base.training.model_copy(update={"max_minutes": minutes, "epochs": 10_000, "device": args.device})

    if args.parent or args.starter:
        parent = load_bundle(args.parent or require_starter())
    else:
        isbi = load_ground_truth(args.isbi / "train" / "image", args.isbi / "train" / "label", LabelMapping.preset("isbi"))
        trainer = build_trainer(out / "parent", TrainingData(isbi[:20], isbi[20:25], []),
                                training_for(args.parent_minutes), **sections)
        parent = load_bundle(trainer.run())

    synthetic = synthetic_ground_truth(11, 6, OTHER_LAB if args.starter else LabLook())
    data = TrainingData(synthetic[:2], synthetic[2:3], [])
    test = synthetic[3:]

    device = args.device
    finetuned = load_bundle(
        build_trainer(out / "finetune", data, training_for(args.minutes), **sections, parent=parent,
                      transfer=base.transfer.model_copy(update={"mode": args.mode or base.transfer.mode})).run()
    )
    scratch_sections = {**sections, "unet": parent.metadata.architecture,
                        "sampler": base.sampler.model_copy(update={"patch_size": parent.metadata.patch_size})}
    scratch = load_bundle(build_trainer(out / "scratch", data, training_for(args.minutes), **scratch_sections).run())

    results = {name: membrane_f1(b, test, "cpu" if device == "auto" else device)
               for name, b in (("finetune", finetuned), ("scratch", scratch), ("parent", parent))}
    look = "other-lab look" if args.starter else "plain look"
    print(f"{'model (2 synthetic sections, ' + look + ', ' + str(args.minutes) + ' min)':56s} {'membrane F1':>12s}")
    for name, f1 in results.items():
        print(f"{name:56s} {f1:12.4f}")
    print(f"RESULT finetune_f1={results['finetune']:.4f} scratch_f1={results['scratch']:.4f} "
          f"parent_f1={results['parent']:.4f}")


if __name__ == "__main__":
    main()
