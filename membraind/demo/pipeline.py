"""The demo: the whole ground-truth pipeline on generated EM, with no data needed.

It is what a lab does before training, in order: instance labels -> membrane labels ->
skeleton labels, a partial (brush-stroke) annotation, import and checks, intensity
normalisation, and patches drawn by the sampler, shown as a contact sheet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from membraind.config import Settings
from membraind.demo.brush import erase_irregular
from membraind.demo.synthetic_em import generate_stack, write_stack
from membraind.groundtruth.classes import THIRD, UNANNOTATED, write_label_image
from membraind.groundtruth.convert import convert_instances, convert_skeletons
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import load_ground_truth
from membraind.groundtruth.preview import contact_sheet, export_patches
from membraind.groundtruth.sampler import PatchSampler
from membraind.segment.metrics import membrane_f1, pixel_accuracy
from membraind.volumes.image_files import read_image, write_image

DEMO_PATCH_SIZE = 128
DEMO_PATCHES = 32


def _step(number: int, text: str) -> None:
    print(f"[{number}/6] {text}", flush=True)


def run_demo(out: Path, settings: Settings, seed: int = 0) -> dict[str, Path]:
    """Run the pipeline into ``out``; returns the main outputs by name."""
    out = Path(out)
    gt_settings = settings.groundtruth
    _step(1, "generating synthetic EM sections with exact labels")
    stack = generate_stack(seed=seed)
    data = write_stack(stack, out / "data")

    _step(2, f"instance labels -> membrane labels (thickness {gt_settings.membrane_thickness} px)")
    membrane_dir = out / "groundtruth" / "membrane"
    written = convert_instances(data["instances"], membrane_dir, gt_settings.membrane_thickness, gt_settings.fill_ecs)
    converted = np.stack([read_image(p) for p in written])
    compared = (stack.labels != THIRD) & (converted != UNANNOTATED)
    f1 = membrane_f1(converted, stack.labels, compared)
    accuracy = pixel_accuracy(converted, stack.labels, compared)
    print(f"      agreement with the generator's exact membranes: F1 {f1:.3f}, pixel accuracy {accuracy:.3f}")

    _step(3, "membrane labels -> skeleton (backbone) labels")
    skeleton_dir = out / "groundtruth" / "skeleton"
    convert_skeletons(membrane_dir, skeleton_dir, LabelMapping.preset("classes"), gt_settings.skeleton_tube_radius)

    _step(4, "imitating a partial annotation: keeping irregular 30% of each membrane label")
    partial_dir = out / "groundtruth" / "partial"
    for k, (path, labels) in enumerate(zip(written, converted)):
        write_label_image(partial_dir / path.name, erase_irregular(labels, 0.7, seed=seed + k, smoothness=90))

    _step(5, "importing EM + partial labels and fitting the intensity normalisation")
    images = load_ground_truth(data["em"], partial_dir, LabelMapping.preset("classes"))
    normalization = settings.normalization.fit([gt.em for gt in images])
    for gt in images:
        print(f"      {gt.name}: {gt.annotated_fraction:5.1%} annotated, {gt.membrane_fraction:5.1%} membrane")

    _step(6, f"sampling {DEMO_PATCHES} patches of {DEMO_PATCH_SIZE} px at any angle, all inside the annotation")
    sampler = PatchSampler(
        images, DEMO_PATCH_SIZE, normalization, settings.augmentation, settings.sampler.angle_step, seed
    )
    patches = [sampler.sample() for _ in range(DEMO_PATCHES)]
    sheet = write_image(out / "preview" / "patches.png", contact_sheet(patches))
    export_patches(patches[:8], [gt.name for gt in images], out / "preview" / "patches")

    outputs = {
        "EM": data["em"],
        "membrane labels": membrane_dir,
        "skeleton labels": skeleton_dir,
        "partial labels": partial_dir,
        "contact sheet": sheet,
    }
    print("\ndone. outputs:")
    for name, path in outputs.items():
        print(f"  {name:16s} {path}")
    return outputs
