"""The files of a model bundle, and its metadata as plain JSON: without torch, so the
daemon (which never imports torch) can look inside bundles. Loading one is
:mod:`membraind.nn.bundle`'s work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["METADATA_FILE", "WEIGHTS_FILE", "ONNX_FILE", "read_metadata_json"]

METADATA_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"


def read_metadata_json(bundle: Path) -> dict[str, Any]:
    """The bundle's ``model.json`` as read (not validated; raises OSError or ValueError)."""
    data = json.loads((Path(bundle) / METADATA_FILE).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{Path(bundle) / METADATA_FILE} does not hold a JSON object")
    return data
