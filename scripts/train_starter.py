"""Train the starter model that ships in membraind/models/starter (docs/starter-model.md).

Data: ISBI 2012 sections 00-21 (validation 22-24; 25-29 are kept for scoring) and
synthetic EM from the generator in three pixel sizes (cells 45, 70 and 110 px across).
Augmentation aims at what differs between labs: contrast and gamma, noise, blur, pixel
size (scale) and, rarely, polarity. The same seed trains the same network on the same
device when the epochs, not the time cap, end training.

The bundle is written with half-precision weights (a few MB) into ``--out`` and scored
on ISBI 25-29 and on synthetic EM in another lab's look (``OTHER_LAB``).

    nice -n 10 python scripts/train_starter.py [--epochs 16] [--max-minutes 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from membraind.demo.lab_looks import OTHER_LAB, LabLook, synthetic_ground_truth
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import load_ground_truth
from membraind.groundtruth.settings import AugmentationSettings
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import load_bundle, read_metadata
from membraind.nn.bundle_layout import METADATA_FILE, WEIGHTS_FILE
from membraind.nn.evaluate import membrane_f1
from membraind.nn.settings import TrainingSettings
from membraind.nn.starter import STARTER_DIR
from membraind.nn.training_setup import build_trainer

DEFAULT_ISBI = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012"
#: (seed, sections, cell diameter px) of the synthetic stacks; the last section of each validates.
SYNTHETIC = ((101, 4, 45.0), (102, 4, 70.0), (103, 4, 110.0))
DESCRIPTION = (
    "ISBI 2012 + synthetic EM, augmented for other labs' contrast, gamma, noise, blur and pixel size; "
    "the default parent of a lab's first version"
)


def starter_augmentation() -> AugmentationSettings:
    """The defaults plus what differs between labs."""
    return AugmentationSettings.model_validate({
        "gaussian_blur": {"probability": 0.3, "sigma_max": 2.0},
        "brightness_contrast": {"probability": 0.7, "brightness": 0.15, "contrast": 0.4},
        "gamma": {"probability": 0.5, "gamma": 1.8},
        "noise": {"probability": 0.5, "sigma_max": 0.1},
        "scale": {"probability": 0.5, "scale_min": 0.6, "scale_max": 1.6},
        "invert": {"probability": 0.1},
    })  # fmt: skip


def install(bundle: Path, out: Path) -> None:
    """Copy ``bundle`` to ``out`` with half-precision weights (integer buffers kept)."""
    state = load_file(str(bundle / WEIGHTS_FILE))
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    out.mkdir(parents=True, exist_ok=True)
    save_file(half, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    shutil.copyfile(bundle / METADATA_FILE, out / METADATA_FILE)
    for name in (WEIGHTS_FILE, METADATA_FILE):
        (out / name).chmod(0o644)  # package data, readable by every user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isbi", type=Path, default=DEFAULT_ISBI)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--max-minutes", type=float, default=15.0, help="time cap (the epochs normally end training)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=STARTER_DIR, help="where the bundle goes (default: the package's)")
    parser.add_argument("--work", type=Path, help="run folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    isbi = load_ground_truth(args.isbi / "train" / "image", args.isbi / "train" / "label", LabelMapping.preset("isbi"))
    train, validation = list(isbi[:22]), list(isbi[22:25])
    for seed, sections, diameter in SYNTHETIC:
        stack = synthetic_ground_truth(seed, sections, LabLook(cell_diameter=diameter))
        train += stack[:-1]
        validation.append(stack[-1])
    training = TrainingSettings(epochs=args.epochs, max_minutes=args.max_minutes, seed=args.seed, device="cpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="starter-"))
    trainer = build_trainer(work, TrainingData(train, validation, []), training,
                            augmentation=starter_augmentation(), name="starter")  # fmt: skip
    trainer.bundle = trainer.bundle.model_copy(update={
        "description": DESCRIPTION,
        "training": {**trainer.bundle.training, "data_described": {
            "isbi2012": "sections 00-21 train, 22-24 validation (25-29 held out for scoring)",
            "synthetic": [{"seed": s, "sections": n, "cell_diameter_px": d} for s, n, d in SYNTHETIC],
        }},
    })  # fmt: skip
    started = time.monotonic()
    bundle_path = trainer.run()
    minutes = (time.monotonic() - started) / 60
    install(bundle_path, args.out)

    starter = load_bundle(args.out)
    isbi_f1 = membrane_f1(starter, isbi[25:])
    other_f1 = membrane_f1(starter, synthetic_ground_truth(11, 3, OTHER_LAB))
    meta = read_metadata(args.out)
    size_mb = (args.out / WEIGHTS_FILE).stat().st_size / 1e6
    print(f"trained {len(meta.history)} epochs in {minutes:.1f} min; {meta.outcome.describe()}")
    print(f"{'scored on':40s} {'membrane F1':>12s}")
    print(f"{'ISBI 2012 sections 25-29':40s} {isbi_f1:12.4f}")
    print(f"{'synthetic EM, other lab look (seed 11)':40s} {other_f1:12.4f}")
    print(f"RESULT isbi_f1={isbi_f1:.4f} other_lab_f1={other_f1:.4f} epochs={len(meta.history)} "
          f"minutes={minutes:.1f} size_mb={size_mb:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
