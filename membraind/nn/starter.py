"""The starter model: a network shipped inside the package, where a lab's first version starts.

It is trained by ``scripts/train_starter.py`` on ISBI 2012 and synthetic EM, with
augmentation aimed at what differs between labs (docs/starter-model.md), and stored as
an ordinary bundle in ``membraind/models/starter`` (half-precision weights: a few MB).
A lab model's first version fine-tunes it unless the request says ``start_from =
"scratch"``; so does ``finetune`` when no parent is named.
"""

from __future__ import annotations

from pathlib import Path

from membraind.errors import InputError
from membraind.nn.bundle_layout import METADATA_FILE, WEIGHTS_FILE

__all__ = ["STARTER_NAME", "STARTER_DIR", "starter_path", "require_starter"]

STARTER_NAME = "starter"
#: Where the package keeps the starter bundle.
STARTER_DIR = Path(__file__).resolve().parents[1] / "models" / STARTER_NAME


def starter_path() -> Path | None:
    """The starter bundle's folder, or None when this installation has none (e.g. removed)."""
    return STARTER_DIR if (STARTER_DIR / METADATA_FILE).is_file() and (STARTER_DIR / WEIGHTS_FILE).is_file() else None


def require_starter() -> Path:
    """The starter bundle's folder, or an InputError saying it is missing and what to do."""
    path = starter_path()
    if path is None:
        raise InputError(
            f"the starter model is missing from this installation ({STARTER_DIR}); reinstall membraind, "
            "or train it with scripts/train_starter.py, or start from scratch (start_from = \"scratch\")"
        )
    return path
