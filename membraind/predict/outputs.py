"""What a prediction writes, per bundle: probability and class images, and where.

- ``membrane``: the membrane probability as 8-bit gray, ``round(255 * P)``, membrane
  **high** (white). The original tool wrote the probability of "class 1", which was
  membrane or not depending on the label mapping; membraind always writes membrane,
  whatever channel the network uses for it, and the 2D instance segmentation reads it so.
- ``classes``: the most probable class, 8-bit, spread over 0-255 so it is visible in a
  viewer: 2 classes -> interior 0, membrane 255; 3 classes -> 0, 128, 255.
- ``rgb``: for 3-class networks, R, G, B = 255 x the probability of class 1, 2, 3.

Outputs go to ``<out>/<bundle name>/<kind>/``: a tile store (with its ``.vsvi``) for
volumes, or a mirror of the input's relative path for single images.
"""

from __future__ import annotations

import numpy as np

from membraind.errors import ConfigError
from membraind.predict.settings import OutputKind

__all__ = ["render_outputs", "check_outputs", "output_channels"]


def output_channels(kind: OutputKind) -> int:
    """Channels of the image a kind writes (1 gray, 3 RGB)."""
    return 3 if kind == "rgb" else 1


def check_outputs(kinds: list[OutputKind], classes: int, bundle_name: str) -> list[OutputKind]:
    """The kinds a bundle can write; RGB needs a 3-class network."""
    if "rgb" in kinds and classes != 3:
        raise ConfigError(
            f"output 'rgb' needs a 3-class network, and bundle '{bundle_name}' has {classes} classes; "
            "drop 'rgb' from predict.outputs"
        )
    return list(dict.fromkeys(kinds))


def _to_uint8(probability: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(probability, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_outputs(probabilities: np.ndarray, membrane_channel: int, kinds: list[OutputKind]) -> dict[str, np.ndarray]:
    """8-bit images of one tile's ``(C, H, W)`` probabilities, one per kind."""
    images: dict[str, np.ndarray] = {}
    classes = probabilities.shape[0]
    for kind in kinds:
        if kind == "membrane":
            images[kind] = _to_uint8(probabilities[membrane_channel])
        elif kind == "classes":
            images[kind] = np.rint(probabilities.argmax(axis=0) * (255 / (classes - 1))).astype(np.uint8)
        else:
            images[kind] = _to_uint8(np.moveaxis(probabilities[:3], 0, -1))
    return images
