"""The job kinds, as pydantic models: one per kind, told apart by ``kind``.

A request file or a ZeroMQ submission is one of these (:func:`parse_spec`); the daemon
checks every path in it against its configured roots before it accepts the job
(:mod:`membraind.service.paths`). Fields left out take the configuration's value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, field_validator, model_validator

from membraind.errors import InputError
from membraind.groundtruth.label_mapping import parse_mapping
from membraind.nn.settings import StartFrom, TransferMode
from membraind.nn.versions import check_model_name
from membraind.predict.request import PredictRequest
from membraind.predict.settings import OutputKind
from membraind.strict import StrictModel
from membraind.volumes.voxel_size import VoxelSizeNm

__all__ = [
    "PredictSpec", "TrainSpec", "FinetuneSpec", "Segment2DSpec", "ExportOnnxSpec", "JobSpec", "SPEC_TYPES",
    "parse_spec",
]  # fmt: skip


class PredictSpec(PredictRequest):
    """Predict membranes (see :class:`~membraind.predict.request.PredictRequest`)."""

    kind: Literal["predict"] = "predict"
    engine: Literal["auto", "torch", "onnx"] | None = Field(
        None, description="inference runtime (default: config); a public request field, so it keeps this name"
    )
    device: str | None = Field(None, description="auto, cpu, cuda, cuda:1 ... (default: config)")
    outputs: list[OutputKind] | None = Field(None, description="membrane, classes, rgb (default: config)")
    overwrite: bool = Field(False, description="recompute tiles whose outputs are already up to date")
    show_in_vast: bool = Field(True, description="VAST source: load the results into VAST as layers")


class TrainSpec(StrictModel):
    """Train a network on (partially) annotated ground truth into the run folder ``out``."""

    kind: Literal["train"] = "train"
    em: Path = Field(description="folder of EM images or a TIFF stack")
    labels: Path = Field(description="folder of label images or a TIFF stack")
    mapping: str | None = Field(
        None, description="label mapping: a preset or GRAY=CLASS pairs, e.g. 0=2,255=1,128=0 (default: config)"
    )
    val_em: Path | None = Field(None, description="validation EM (default: hold out part of the data)")
    val_labels: Path | None = None
    out: Path | None = Field(
        None, description="run folder: checkpoint, history, learning curve, model/ (not with model: given for you)"
    )
    model: str | None = Field(
        None, description="a lab model: the run becomes its next version, <models folder>/<model>/v<N>"
    )
    name: str | None = Field(None, description="model name (default: the lab model's, else the run folder's name)")
    epochs: int | None = Field(None, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    patch_size: int | None = Field(
        None, ge=16, description="patch side in pixels (default: config, else chosen from the painted regions)"
    )
    voxel_size_nm: VoxelSizeNm | None = Field(
        None, description="(x, y, z) voxel size of the EM in nm, stored in the bundle (default: the EM's own)"
    )
    device: str | None = None
    seed: int | None = None
    restart: bool = Field(False, description="start over instead of resuming a run in out (first attempt only)")
    start_from: StartFrom | None = Field(
        None,
        description="starter: fine-tune the starter model shipped with membraind; scratch: random weights "
        "(default: starter for a lab model's version, scratch for a run folder)",
    )

    @field_validator("mapping")
    @classmethod
    def _readable_mapping(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mapping(value)  # refused at submit, not hours later when it runs
        return value

    @model_validator(mode="after")
    def _validation_pair(self) -> "TrainSpec":
        if (self.val_em is None) != (self.val_labels is None):
            raise ValueError("give both val_em and val_labels, or neither (then part of the data is held out)")
        return self

    @model_validator(mode="after")
    def _out_or_model(self) -> "TrainSpec":
        if self.model is not None:
            try:
                check_model_name(self.model)
            except InputError as exc:
                raise ValueError(str(exc)) from None
            # out is the version folder claimed for it: <models>/<model>/v<N>, nothing else
            if self.out is not None and (self.out.parent.name != self.model or not re.fullmatch(r"v[1-9]\d*", self.out.name)):
                raise ValueError(f"give out (a run folder) or model (the next version of a lab model), not both; "
                                 f"{self.model}'s versions are written to the models folder")  # fmt: skip
        elif self.out is None:
            raise ValueError("give out (the run folder) or model (a lab model whose next version this run becomes)")
        return self

    @property
    def version(self) -> int | None:
        """The lab model version this run makes (``out`` is ``<models>/<model>/v<N>``), else None."""
        return int(self.out.name[1:]) if self.model is not None and self.out is not None else None


class FinetuneSpec(TrainSpec):
    """Fine-tune the bundle ``parent`` on new ground truth (transfer learning)."""

    kind: Literal["finetune"] = "finetune"  # type: ignore[assignment]
    parent: Path | None = Field(
        None,
        description="the parent model bundle (default: the lab model's latest version, else the starter model)",
    )
    mode: TransferMode | None = Field(None, description="what learns (default: config, continue)")
    leaky_factor: float | None = Field(None, gt=0, le=1)
    episodic_ratio: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_parent(self) -> "FinetuneSpec":
        if self.start_from == "scratch":
            raise ValueError("a finetune starts from a parent; to train from random weights use kind train "
                             "with start_from = \"scratch\"")  # fmt: skip
        if self.start_from == "starter" and self.parent is not None:
            raise ValueError("give parent or start_from = \"starter\", not both")
        return self


class Segment2DSpec(StrictModel):
    """Cut each section of a membrane-probability volume into cells."""

    kind: Literal["segment2d"] = "segment2d"
    membrane: Path = Field(description="membrane probability: a predicted layer's .vsvi or folder, or images")
    out: Path
    mip: int | None = Field(None, ge=0, description="mip to segment (default: the first holding data)")
    sections: tuple[int, int] | None = Field(None, description="[first, last] sections, inclusive (default all)")
    h: float | None = Field(None, gt=0, le=1, description="h-minima depth in probability units (default: config)")
    sigma: float | None = Field(None, ge=0)
    min_size: int | None = Field(None, ge=0)
    membrane_threshold: float | None = Field(None, gt=0, lt=1)
    overwrite: bool = False
    label_tiff: bool = True
    preview: bool = Field(True, description="write <out>/preview/section_<z>.png: each cell in its own colour")
    em: Path | None = Field(None, description="EM the membrane was predicted from, drawn under the preview cells")

    @model_validator(mode="after")
    def _ordered(self) -> "Segment2DSpec":
        if self.sections is not None and not 0 <= self.sections[0] <= self.sections[1]:
            raise ValueError(f"sections must be [first, last] with 0 <= first <= last, got {list(self.sections)}")
        return self


class ExportOnnxSpec(StrictModel):
    """Export a model bundle to ONNX (metadata embedded)."""

    kind: Literal["export-onnx"] = "export-onnx"
    bundle: Path
    out: Path | None = Field(None, description="ONNX file (default: <bundle>/model.onnx)")


SPEC_TYPES = (PredictSpec, TrainSpec, FinetuneSpec, Segment2DSpec, ExportOnnxSpec)
JobSpec = Annotated[Union[SPEC_TYPES], Field(discriminator="kind")]
_JOB_SPEC = TypeAdapter(JobSpec)


def parse_spec(data: dict | str) -> object:
    """A job spec from a dict or JSON text (raises pydantic's ValidationError)."""
    return _JOB_SPEC.validate_json(data) if isinstance(data, str) else _JOB_SPEC.validate_python(data)

