"""Turning label files into membraind's class convention (0/1/2/3).

Labs paint labels in different conventions: ISBI stores 255 for interior and 0 for
membrane, mEMbrain stores the class values themselves, mEMbrain's exported patches
store 0/255 (or 0/128/255). A :class:`LabelMapping` names which gray value means which
class; a value that the mapping does not name is an error, never a guess, and the error
suggests the mappings that would read the file.

A mapping is chosen everywhere in one of the forms :func:`parse_mapping` reads: a
preset name (``isbi``), ``GRAY=CLASS`` pairs (``0=2,255=1,128=0``) or a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from membraind.errors import InputError
from membraind.groundtruth.classes import CLASS_NAMES, UNANNOTATED
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

CLASSES_TEXT = ", ".join(f"{klass} {name}" for klass, name in CLASS_NAMES.items())
"""The classes as a user reads them in messages: ``0 unannotated, 1 interior, ...``."""

MAPPING_FORMS = (
    f"give a preset ({', '.join(PRESETS)}) or GRAY=CLASS pairs separated by commas, "
    f"e.g. 0=2,255=1,128=0 (classes: {CLASSES_TEXT})"
)

MANY_VALUES = 4
"""More unmapped values than this in one file look like instance ids, not erased pixels."""


def check_preset(name: str) -> str:
    """``name`` when it names one of :data:`PRESETS`; else a ValueError listing them (usable in validators)."""
    if name not in PRESETS:
        raise ValueError(
            f"unknown label mapping {name!r}; choose one of {', '.join(PRESETS)} or give GRAY=CLASS pairs, "
            "e.g. 0=2,255=1,128=0"
        )
    return name


class LabelMapping(StrictModel):
    """Which gray value of a label file means which class (0 = not annotated)."""

    model_config = ConfigDict(frozen=True)

    values: dict[int, int] = Field(
        default_factory=lambda: dict(PRESETS["classes"]),
        description=f"gray value in the label file -> class ({CLASSES_TEXT})",
    )

    @field_validator("values")
    @classmethod
    def _classes_known(cls, values: dict[int, int]) -> dict[int, int]:
        for gray, klass in values.items():
            if klass not in CLASS_NAMES:
                raise ValueError(f"gray value {gray} maps to class {klass}; the classes are {CLASSES_TEXT}")
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

    def text(self) -> str:
        """The mapping as ``--mapping`` takes it: ``GRAY=CLASS`` pairs by gray value, e.g. ``0=2,255=1``."""
        return ",".join(f"{gray}={klass}" for gray, klass in sorted(self.values.items()))

    def describe(self) -> str:
        """The preset's name with its pairs (``isbi: 0=2,255=1``), or the pairs alone."""
        name = next((name for name, values in PRESETS.items() if values == self.values), None)
        return f"{name}: {self.text()}" if name else self.text()

    def meaning(self) -> str:
        """The mapping in words, by gray value: ``0 membrane, 255 interior``."""
        return ", ".join(f"{gray} {CLASS_NAMES[klass]}" for gray, klass in sorted(self.values.items()))

    def with_unannotated(self, grays: Iterable[int]) -> "LabelMapping":
        """This mapping with ``grays`` added as class 0 (not annotated): how erased pixels are read."""
        return LabelMapping(values={**self.values, **{int(gray): UNANNOTATED for gray in grays}})

    def apply(self, label: np.ndarray, source: Path | str) -> np.ndarray:
        """Map a gray label image to classes (uint8).

        ``source`` names the file in the error raised for values outside the mapping
        (:class:`UnmappedLabelValues`) or for colour labels (colour labels are instance
        labels: convert them first).
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
            raise UnmappedLabelValues(source, self, label, unknown)
        return classes


class UnmappedLabelValues(InputError):
    """A label image holds gray values its mapping does not name.

    The message suggests what would read the file: the presets that name every value in
    it, and the mapping in use with the unknown values as "not annotated" (erased). A
    caller that knows better advice (VAST's segment ids) re-raises with
    :attr:`problem` and its own.
    """

    def __init__(self, source: Path | str, mapping: LabelMapping, label: np.ndarray, unknown: np.ndarray) -> None:
        self.source = source
        self.values = [int(v) for v in np.unique(label[unknown])]
        shown = ", ".join(str(v) for v in self.values[:8]) + (" ..." if len(self.values) > 8 else "")
        self.problem = f"{source} holds values outside the label mapping ({shown}; {int(unknown.sum())} pixels)"
        present = {int(v) for v in np.unique(label)}
        super().__init__(f"label {self.problem}; {_suggestions(mapping, present, self.values)}")


def _suggestions(mapping: LabelMapping, present: set[int], unknown: list[int]) -> str:
    """What to give instead of ``mapping`` for a file holding the gray values ``present``."""
    said = [f"the mapping in use ({mapping.describe()}) does not name them"]
    if len(unknown) > MANY_VALUES:
        said.append(
            f"{len(present)} different values look like instance labels (one id per cell): "
            "turn them into membrane labels with `membraind convert-instances` first"
        )
        return "; ".join(said)
    fitting = [f"{name} ({LabelMapping(values=values).meaning()})" for name, values in PRESETS.items() if present <= values.keys()]
    if fitting:
        said.append(f"if the file follows another convention, give its preset: --mapping {' or '.join(fitting)}")
    grays = ", ".join(str(v) for v in unknown)
    verb = "marks" if len(unknown) == 1 else "mark"
    said.append(
        f"if {grays} {verb} erased or unpainted pixels, read {'it' if len(unknown) == 1 else 'them'} as not annotated: "
        f"--mapping {mapping.with_unannotated(unknown).text()}"
    )
    return "; ".join(said)


def parse_mapping(choice: str | Mapping[int, int]) -> LabelMapping:
    """The label mapping ``choice`` names: a preset name (``isbi``), ``GRAY=CLASS`` pairs
    separated by commas (``0=2,255=1,128=0``) or a table of gray value -> class.

    The one reader of a mapping for the command line (``--mapping``), request files and
    the configuration. Raises ValueError naming the part at fault (usable in validators).
    """
    if not isinstance(choice, str):
        return LabelMapping(values=dict(choice))
    text = choice.strip()
    if "=" not in text:
        return LabelMapping(values=PRESETS[check_preset(text)])
    values: dict[int, int] = {}
    for part in text.split(","):
        gray, klass = _pair(part.strip(), text)
        if gray in values:
            raise ValueError(f"label mapping {text!r}: gray value {gray} is given twice; give each gray value once")
        values[gray] = klass
    return LabelMapping(values=values)


def _pair(part: str, text: str) -> tuple[int, int]:
    """One ``GRAY=CLASS`` pair of the mapping ``text``."""
    pieces = part.split("=")
    if len(pieces) != 2:
        raise ValueError(f"label mapping {text!r}: {part!r} is not GRAY=CLASS; {MAPPING_FORMS}")
    try:
        gray, klass = (int(piece.strip()) for piece in pieces)
    except ValueError:
        raise ValueError(f"label mapping {text!r}: {part!r} is not two whole numbers GRAY=CLASS; {MAPPING_FORMS}") from None
    if gray < 0:
        raise ValueError(f"label mapping {text!r}: in {part!r}, gray value {gray} is negative")
    if klass not in CLASS_NAMES:
        raise ValueError(f"label mapping {text!r}: in {part!r}, {klass} is no class; the classes are {CLASSES_TEXT}")
    return gray, klass


def decode_instance_ids(label: np.ndarray) -> np.ndarray:
    """Instance ids from a label image: gray ids as they are, RGB as R*65536 + G*256 + B."""
    if label.ndim == 3:
        rgb = label[..., :3].astype(np.uint32)
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return label.astype(np.uint32, copy=False)
