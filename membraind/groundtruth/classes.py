"""membraind's one internal label convention, and the one way its label images are written.

Every label image inside membraind holds these class values, whatever the file it came
from used (see :mod:`membraind.groundtruth.label_mapping`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from membraind.volumes.image_files import write_image

UNANNOTATED = 0  #: not painted; ignored by the sampler and the loss
INTERIOR = 1  #: cell interior (cytoplasm, neuropil)
MEMBRANE = 2  #: cell membrane
THIRD = 3  #: an optional third class, e.g. extracellular space

CLASS_NAMES = {UNANNOTATED: "unannotated", INTERIOR: "interior", MEMBRANE: "membrane", THIRD: "third"}

#: How every picture membraind makes shows a class: the palette of its label PNGs and
#: the tint of its overlays on EM. Magenta against green stays apart for red-green
#: colour blindness; unannotated is black, so a viewer shows the painting on black.
CLASS_COLOURS: dict[int, tuple[int, int, int]] = {
    UNANNOTATED: (0, 0, 0),
    INTERIOR: (40, 190, 80),
    MEMBRANE: (255, 0, 255),
    THIRD: (255, 170, 0),
}


def write_label_image(path: Path, classes: np.ndarray) -> Path:
    """Write class labels (0-3) as a palette PNG, atomically.

    The pixel values stay the classes (PIL, Fiji and membraind read 0/1/2/3; imageio and
    scikit-image need ``mode="P"``, or they return the colours), while image viewers
    show :data:`CLASS_COLOURS` instead of near-black grays.
    """
    values = np.asarray(classes)
    if values.ndim != 2 or (values.size and not 0 <= int(values.min()) <= int(values.max()) <= THIRD):
        raise ValueError(f"{path}: class labels must be one 2D section of values 0-{THIRD}")
    palette = [CLASS_COLOURS[k] for k in sorted(CLASS_COLOURS)]
    return write_image(Path(path), np.ascontiguousarray(values, np.uint8), palette)
