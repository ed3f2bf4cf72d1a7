"""Turning label files into membraind's class convention (0/1/2/3).

Labs paint labels in different conventions: ISBI stores 255 for interior and 0 for
membrane, mEMbrain stores the class values themselves, mEMbrain's exported patches
store 0/255 (or 0/128/255). A :class:`LabelMapping` names which gray value means which
class; a value that the mapping does not name is an error, never a guess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from membraind.errors import InputError
from membraind.groundtruth.classes import CLASS_NAMES
from membraind.strict import StrictModel

PRESETS: dict[str, dict[int, int]] = {
    # ISBI 2012 challenge: 255 = cell interior, 0 = membrane, every pixel labelled.
    "isbi": {255: 1, 0: 2},
    # mEMbrain's own label images, and membraind's: the values are the classes.
    "classes": {0: 0, 1: 1, 2: 2, 3: 3},
    # Patches exported by mEMbrain: 255*(class-1)/(n-1).
    "membrain-patches-2": {0: 1, 255: 2},
    "membrain-patches-3": {0: 1, 128: 2, 255: 3},
}


def check_preset(name: str) -> str:
    """``name`` when it names one of :data:`PRESETS`; else a ValueError listing them (usable in validators)."""
    if name not in PRESETS:
        raise ValueError(f"unknown label mapping {name!r}; choose one of {', '.join(PRESETS)}")
    return name


class LabelMapping(StrictModel):
    """Which gray value of a label file means which class (0 = not annotated)."""

    model_config = ConfigDict(frozen=True)

    values: dict[int, int] = Field(
        default_factory=lambda: dict(PRESETS["classes"]),
        description="gray value in the label file -> class (0 unannotated, 1 interior, 2 membrane, 3 third)",
    )

    @field_validator("values")
    @classmethod
    def _classes_known(cls, values: dict[int, int]) -> dict[int, int]:
        for gray, klass in values.items():
            if klass not in CLASS_NAMES:
                raise ValueError(f"gray value {gray} maps to class {klass}; classes are 0, 1, 2 and 3")
            if gray < 0:
                raise ValueError(f"gray value {gray} is negative")
        return values

    @classmethod
    def preset(cls, name: str) -> "LabelMapping":
        """One of the named mappings in :data:`PRESETS`."""
        try:
            return cls(values=PRESETS[check_preset(name)])
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def apply(self, label: np.ndarray, source: Path | str) -> np.ndarray:
        """Map a gray label image to classes (uint8).

        ``source`` names the file in the error raised for values outside the mapping
        or for colour labels (colour labels are instance labels: convert them first).
        """
        if label.ndim != 2:
            raise InputError(
                f"label {source} has {label.shape[-1]} colour channels; class labels must be "
                "grayscale (colour images are instance labels: run `membraind convert-instances` first)"
            )
        lut_size = max(int(label.max(initial=0)), max(self.values)) + 1
        lut = np.full(lut_size, 255, dtype=np.uint8)  # 255 marks "not in the mapping"
        for gray, klass in self.values.items():
            lut[gray] = klass
        classes = lut[label.astype(np.int64, copy=False)]
        unknown = classes == 255
        if unknown.any():
            bad = np.unique(label[unknown])
            shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
            raise InputError(
                f"label {source} holds values outside the label mapping ({shown}; "
                f"{int(unknown.sum())} pixels); the mapping knows {sorted(self.values)}: "
                "choose another mapping (e.g. --mapping isbi) or add these values to it"
            )
        return classes


def decode_instance_ids(label: np.ndarray) -> np.ndarray:
    """Instance ids from a label image: gray ids as they are, RGB as R*65536 + G*256 + B."""
    if label.ndim == 3:
        rgb = label[..., :3].astype(np.uint32)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return label.astype(np.uint32, copy=False)
