"""Looking at labels on the EM: whole-section overlays, contact sheets of training patches,
patch export. Colours are the classes' :data:`~membraind.groundtruth.classes.CLASS_COLOURS`,
the same a viewer shows for membraind's label PNGs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from membraind.groundtruth.classes import CLASS_COLOURS, INTERIOR, MEMBRANE, THIRD, UNANNOTATED
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.groundtruth.sampler import Patch
from membraind.volumes.image_files import write_image

if TYPE_CHECKING:
    from membraind.groundtruth.sampler import PatchSampler
    from membraind.groundtruth.settings import AugmentationSettings, SamplerSettings
    from membraind.nn.settings import UnpaintedSettings

# Opacity of each class's tint on the EM: thin membranes must stand out, the interior
# tint only has to tell painted from unpainted pixels, and unannotated stays plain EM.
TINT = {INTERIOR: 0.25, MEMBRANE: 0.6, THIRD: 0.5}
LEGEND_NAMES = {UNANNOTATED: "not annotated (plain EM)", INTERIOR: "cell interior", MEMBRANE: "membrane", THIRD: "third class"}
GAP = 4
_FONT_SIZE = 13
_LINE = _FONT_SIZE + 8

Colour = tuple[int, int, int]


def tint(gray: np.ndarray, colours: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB uint8: the [0, 1] ``gray`` image with ``colours`` (H, W, 3, or one RGB colour)
    laid over it at opacity ``alpha`` (H, W; 0 = plain gray)."""
    rgb = np.repeat((np.clip(gray, 0, 1) * 255.0).astype(np.float32)[..., None], 3, axis=2)
    a = np.asarray(alpha, np.float32)[..., None]
    return np.rint((1 - a) * rgb + a * np.asarray(colours, np.float32)).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB uint8 view of a [0, 1] image with its classes tinted on top."""
    palette = np.zeros((256, 3), np.uint8)
    opacity = np.zeros(256, np.float32)
    for klass, alpha in TINT.items():
        palette[klass], opacity[klass] = CLASS_COLOURS[klass], alpha
    return tint(image, palette[labels], opacity[labels])


def with_legend(picture: np.ndarray, title: str, entries: Sequence[tuple[Colour | None, str]]) -> np.ndarray:
    """``picture`` with a white strip below it: ``title``, then a colour swatch and text per
    entry (``None`` draws an EM-gray swatch), wrapped onto as many lines as the width needs."""
    font = ImageFont.load_default(_FONT_SIZE)
    width = picture.shape[1]
    items = [(None, title, False)] + [(colour, text, True) for colour, text in entries]
    lines: list[list[tuple[int, Colour | None, str, bool]]] = [[]]
    x = GAP
    for colour, text, swatch in items:
        size = (_FONT_SIZE + 4 if swatch else 0) + int(font.getlength(text)) + 3 * GAP
        if lines[-1] and x + size > width:
            lines.append([])
            x = GAP
        lines[-1].append((x, colour, text, swatch))
        x += size
    strip = Image.new("RGB", (width, len(lines) * _LINE + GAP), "white")
    draw = ImageDraw.Draw(strip)
    for row, line in enumerate(lines):
        y = GAP + row * _LINE
        for x, colour, text, swatch in line:
            if swatch:
                box = (x, y + 1, x + _FONT_SIZE, y + 1 + _FONT_SIZE)
                draw.rectangle(box, fill=colour or (128, 128, 128), outline=(0, 0, 0))
                x += _FONT_SIZE + 4
            draw.text((x, y), text, fill=(0, 0, 0), font=font)
    return np.concatenate([picture, np.asarray(strip)], axis=0)


def section_overlay(image: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """One section's labels tinted on its [0, 1] EM, with a legend giving each class's share."""
    counts = np.bincount(labels.ravel(), minlength=THIRD + 1)
    entries = [
        (None if klass == UNANNOTATED else CLASS_COLOURS[klass], f"{LEGEND_NAMES[klass]} {counts[klass] / labels.size:.0%}")
        for klass in (MEMBRANE, INTERIOR, THIRD, UNANNOTATED)
        if counts[klass] or klass in (MEMBRANE, INTERIOR)
    ]
    return with_legend(overlay(image, labels), f"section {name}:", entries)


def write_section_overlays(
    images: Sequence[GroundTruthImage], out: Path, normalization: IntensityNormalization
) -> list[Path]:
    """Write ``out/<name>_overlay.png`` per image: its labels on its EM, stretched as the network sees it."""
    return [
        write_image(Path(out) / f"{gt.name}_overlay.png", section_overlay(normalization.normalize_section(gt.em), gt.labels, gt.name))
        for gt in images
    ]


def sample_patches(
    images: Sequence[GroundTruthImage], normalization: IntensityNormalization, sampler: "SamplerSettings",
    augmentation: "AugmentationSettings", multiple: int, count: int, patch_size: int | None = None,
    seed: int | None = None, unpainted: "UnpaintedSettings | None" = None,
) -> tuple[list[Patch], "PatchSampler"]:
    """``count`` patches as training draws them from ``images`` (normalisation fitted to them),
    and the sampler (``patch_size``/``seed``: instead of the sampler settings'). With
    ``unpainted`` (training's unpainted-pixel settings) patches reach into unpainted EM
    where training's would; without, they lie wholly inside the painting."""
    from membraind.groundtruth.painted_share import painted_share, patch_min_painted, unpainted_active
    from membraind.groundtruth.sampler import PatchSampler

    learn_unpainted = unpainted is not None and unpainted_active(unpainted, painted_share(images))
    min_painted = patch_min_painted(sampler, learn_unpainted)

    norm = normalization.fit([gt.em for gt in images])
    patch_sampler = PatchSampler(
        images, patch_size or sampler.patch_size, norm, augmentation, sampler.angle_step,
        seed=sampler.seed if seed is None else seed, multiple=multiple,  # the sizes training could use
        min_painted=min_painted,
    )  # fmt: skip
    return [patch_sampler.sample() for _ in range(count)], patch_sampler


def contact_sheet(patches: Sequence[Patch], columns: int = 8) -> np.ndarray:
    """Patches with their labels overlaid, in a grid (RGB uint8)."""
    if not patches:
        raise ValueError("a contact sheet needs at least one patch")
    p = patches[0].image.shape[0]
    rows = -(-len(patches) // columns)
    cols = min(columns, len(patches))
    sheet = np.full((rows * (p + GAP) + GAP, cols * (p + GAP) + GAP, 3), 255, np.uint8)
    for k, patch in enumerate(patches):
        r, c = divmod(k, columns)
        y, x = GAP + r * (p + GAP), GAP + c * (p + GAP)
        sheet[y : y + p, x : x + p] = overlay(patch.image, patch.labels)
    return sheet


def label_png(labels: np.ndarray, classes: int) -> np.ndarray:
    """Labels as mEMbrain's patch PNGs store them: 255 * (class - 1) / (classes - 1)."""
    return np.rint(255.0 * (labels.astype(np.float32) - 1) / (classes - 1)).clip(0, 255).astype(np.uint8)


def export_patches(patches: Sequence[Patch], names: Sequence[str], out: Path, classes: int = 2) -> tuple[Path, Path]:
    """Write ``out/em/<name>_%05d.png`` and ``out/labels/<name>_%05d.png`` for inspection.

    ``names`` gives the ground-truth image name of each patch's source.
    """
    em_dir, label_dir = Path(out) / "em", Path(out) / "labels"
    counters: dict[str, int] = {}
    for patch in patches:
        name = names[patch.source]
        counters[name] = counters.get(name, 0) + 1
        stem = f"{name}_{counters[name]:05d}.png"
        write_image(em_dir / stem, np.clip(patch.image * 255.0 + 0.5, 0, 255).astype(np.uint8))
        write_image(label_dir / stem, label_png(patch.labels, classes))
    return em_dir, label_dir
