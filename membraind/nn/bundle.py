"""Model bundles: a trained network and everything needed to use it, in one folder.

A bundle is a directory holding

- ``model.json``: :class:`ModelMetadata` (architecture, classes, intensity
  normalisation, training settings, history and outcome, lineage);
- ``weights.safetensors``: the PyTorch state dict, stored with ``safetensors`` so that
  loading a bundle never unpickles (never runs) anything;
- or, for a network imported from ONNX, ``model.onnx`` instead of the weights.

``model.json`` carries a ``format_version``. Older bundles are upgraded on load, one
version at a time, by the functions in :data:`_MIGRATIONS`; newer ones are refused with
a message asking to upgrade membraind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

import torch
from pydantic import Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file

from membraind.atomic import sibling
from membraind.errors import InputError, describe_validation_error
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.nn.history import TrainingOutcome
from membraind.nn.bundle_layout import METADATA_FILE, ONNX_FILE, WEIGHTS_FILE
from membraind.nn.settings import UNetConfig
from membraind.nn.unet import UNet
from membraind.strict import StrictModel
from membraind.vast.painted import GroundTruthRecord
from membraind.volumes.voxel_size import VoxelSizeNm

CURRENT_FORMAT = 2

#: Output channel k is label class k + 1 (see :mod:`membraind.groundtruth.classes`).
DEFAULT_CLASS_NAMES = ("interior", "membrane", "third")


def default_class_names(classes: int) -> list[str]:
    """The class names of a network with ``classes`` output channels."""
    return list(DEFAULT_CLASS_NAMES[:classes])


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ModelMetadata(StrictModel):
    """The contents of a bundle's ``model.json``."""

    format_version: int = Field(CURRENT_FORMAT, description="bundle format; upgraded on load when older")
    name: str = Field(min_length=1)
    created: str = Field(default_factory=_now, description="ISO 8601 time the bundle was written")
    architecture: UNetConfig
    class_names: list[str] = Field(description="name of each output channel, e.g. ['interior', 'membrane']")
    membrane_channel: int = Field(1, ge=0, description="output channel holding the membrane probability")
    normalization: IntensityNormalization
    mip: int = Field(0, ge=0, description="resolution level (MIP) the network was trained at")
    voxel_size_nm: VoxelSizeNm | None = Field(
        None, description="(x, y, z) voxel size of the training data in nm at the training mip; null: not recorded"
    )
    patch_size: int = Field(gt=0, description="side of the square training patches")
    patch_size_automatic: bool = Field(False, description="patch_size was chosen from the painted regions (none given)")
    training: dict[str, Any] = Field(default_factory=dict, description="training settings (free-form)")
    history: list[dict[str, Any]] = Field(default_factory=list, description="per-epoch records")
    outcome: TrainingOutcome | None = Field(
        None, description="which epoch these weights are from and why training stopped (none in older bundles)"
    )
    parent: str | None = Field(None, description="bundle this one was fine-tuned from")
    description: str | None = Field(None, description="one line on what the network is (e.g. the starter model's card)")
    version: int | None = Field(None, ge=1, description="the version of lab model `name` this bundle is (None: not one)")
    parent_data: list[dict[str, Any]] = Field(default_factory=list, description="data the parent was trained on")
    ground_truth: GroundTruthRecord | None = Field(
        None, description="the painting in VAST this bundle learned from: where, when, voxels per class (lineage)"
    )
    source: Literal["membraind", "onnx-import", "state-dict-import"] = "membraind"
    onnx_outputs: Literal["probabilities", "logits"] = Field(
        "probabilities", description="what an imported ONNX network outputs (membraind's own export: probabilities)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ModelMetadata":
        if len(self.class_names) != self.architecture.classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but the network has "
                f"{self.architecture.classes} output channels (architecture.classes)"
            )
        if self.membrane_channel >= self.architecture.classes:
            raise ValueError(f"membrane_channel {self.membrane_channel} is not one of the network's output channels")
        return self


# -- migrations ------------------------------------------------------------------------


def _from_v0(data: dict) -> dict:
    """Version 0 (pre-release) called the normalisation ``intensity`` and had no ``source``."""
    data = dict(data)
    if "intensity" in data:
        data["normalization"] = data.pop("intensity")
    data.setdefault("source", "membraind")
    data["format_version"] = 1
    return data


def _from_v1(data: dict) -> dict:
    """Version 1 had ``pixel_size_nm`` as (y, x), which membraind never filled in; version 2
    records ``voxel_size_nm`` as (x, y, z), z = x when unknown (cubic, as everywhere), and may
    hold ``outcome`` and ``patch_size_automatic`` (absent in version 1: None and False)."""
    data = dict(data)
    pixel = data.pop("pixel_size_nm", None)
    if isinstance(pixel, list) and len(pixel) == 2:
        data["voxel_size_nm"] = [pixel[1], pixel[0], pixel[1]]
    data["format_version"] = 2
    return data


#: ``_MIGRATIONS[v]`` turns a version-``v`` model.json dict into a version ``v + 1`` one.
_MIGRATIONS: dict[int, Callable[[dict], dict]] = {0: _from_v0, 1: _from_v1}


def _migrate(data: dict, source: str) -> dict:
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return data  # validation reports the field
    if version > CURRENT_FORMAT:
        raise InputError(
            f"{source} has format_version {version}: it was written by a newer membraind "
            f"(this one reads up to {CURRENT_FORMAT}); upgrade membraind to use it"
        )
    while version < CURRENT_FORMAT:
        if version not in _MIGRATIONS:
            raise InputError(
                f"{source} has format_version {version}, which this membraind cannot upgrade; re-train or re-export the model"
            )
        data = _MIGRATIONS[version](data)
        version = data["format_version"]
    return data


def metadata_from_json(text: str, source: str) -> ModelMetadata:
    """Parse (and upgrade) a model.json text; ``source`` names where it came from in errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "fix it or restore the bundle from a copy"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{source} must hold a JSON object (the model description), not {type(data).__name__}")
    data = _migrate(data, source)
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as exc:
        raise InputError(
            f"{source} is not a valid model description: {describe_validation_error(exc)}; correct that field"
        ) from None


def _bundle_dir(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"model bundle {path} does not exist; give the folder holding {METADATA_FILE} and {WEIGHTS_FILE}"
        )
    if not path.is_dir():
        raise InputError(
            f"{path} is not a model bundle: a bundle is a folder holding {METADATA_FILE} and {WEIGHTS_FILE}; "
            "give that folder"
        )
    return path


def read_metadata(path: Path) -> ModelMetadata:
    """The (upgraded) :class:`ModelMetadata` of the bundle folder ``path``, without loading weights."""
    json_path = _bundle_dir(path) / METADATA_FILE
    if not json_path.is_file():
        raise InputError(f"{json_path} is missing: {path} is not a complete model bundle; restore it or re-train")
    try:
        text = json_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {json_path} ({exc}); check the file and its permissions") from None
    return metadata_from_json(text, str(json_path))


# -- weights ---------------------------------------------------------------------------


def apply_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
    """Load ``state`` into ``model``; raise InputError naming a key that is missing, extra or mis-shaped."""
    expected = model.state_dict()
    config = getattr(model, "config", None)
    target = f"the U-Net architecture ({config})" if config is not None else "the network"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        problem = f"lacks parameter '{missing[0]}'" if missing else f"has parameter '{unexpected[0]}' that the network lacks"
        raise InputError(
            f"the weights in {source} do not fit {target}: they {problem} "
            f"({len(missing)} missing, {len(unexpected)} unexpected); use weights trained with this architecture"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"the weights in {source} do not fit {target}: parameter '{key}' "
                f"has shape {tuple(state[key].shape)}, the network needs {tuple(tensor.shape)}; "
                "use weights trained with this architecture"
            )
    model.load_state_dict(state, strict=True)


def _load_weights(weights: Path, device: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(weights), device=device)
    except Exception as exc:  # safetensors raises its own error types for every kind of damage
        raise InputError(
            f"{weights} is truncated or corrupt ({type(exc).__name__}: {exc}); restore the bundle from a copy or re-train"
        ) from None


@dataclass
class Bundle:
    """A loaded bundle. ``model`` is None for an ONNX import (use ``onnx_path``)."""

    path: Path | None
    metadata: ModelMetadata
    model: UNet | None
    onnx_path: Path | None = None


def load_bundle(path: Path, device: str = "cpu") -> Bundle:
    """Load the bundle folder ``path``; the model comes back in eval mode on ``device``."""
    path = Path(path)
    metadata = read_metadata(path)
    weights, onnx_file = path / WEIGHTS_FILE, path / ONNX_FILE
    onnx_path = onnx_file if onnx_file.is_file() else None
    if not weights.is_file():
        if onnx_path is not None:
            return Bundle(path=path, metadata=metadata, model=None, onnx_path=onnx_path)
        raise InputError(f"{weights} is missing: {path} is not a complete model bundle; restore it or re-train")
    model = UNet(metadata.architecture)
    apply_state_dict(model, _load_weights(weights, "cpu"), weights)
    return Bundle(path=path, metadata=metadata, model=model.to(device).eval(), onnx_path=onnx_path)


# -- saving ----------------------------------------------------------------------------


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished ``tmp`` folder to ``path``, replacing an existing bundle there.

    POSIX has no atomic swap of two folders, so the old bundle is first renamed aside
    and only deleted once the new one is in place; if the swap fails it is put back.
    """
    if not path.exists():
        os.replace(tmp, path)
        return
    # Replace only what looks like a bundle (even a damaged one), never a data folder.
    looks_like_bundle = any((path / name).is_file() for name in (METADATA_FILE, WEIGHTS_FILE, ONNX_FILE))
    if not path.is_dir() or (any(path.iterdir()) and not looks_like_bundle):
        raise InputError(f"{path} exists and is not a model bundle; choose another output path or move it away")
    old = sibling(path, "old")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_bundle(path: Path, model: UNet, metadata: ModelMetadata) -> Path:
    """Write ``model`` and ``metadata`` as the bundle folder ``path`` (replacing one there); returns ``path``.

    Everything is written to a temporary folder beside ``path`` and then renamed into
    place, so a reader never sees a half-written bundle.
    """
    path = Path(path)
    config = getattr(model, "config", None)
    if config is not None and config != metadata.architecture:
        raise ValueError(f"metadata.architecture {metadata.architecture} does not describe the model ({config})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(path, "tmp")
    tmp.mkdir()  # not mkdtemp: its 0700 mode would make the bundle private to this user
    try:
        # safetensors wants contiguous CPU tensors that share no memory.
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / METADATA_FILE).write_text(metadata.model_dump_json(indent=2), encoding="utf-8")
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
