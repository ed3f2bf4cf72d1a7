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
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.nn.settings import StartFrom, TransferMode, UNetConfig
from membraind.nn.versions import BUNDLE_DIR, check_model_name, check_model_reference
from membraind.predict.request import Anchors, BoxRegion, PredictRequest
from membraind.predict.settings import OutputKind
from membraind.strict import StrictModel
from membraind.vast.painted import VastGroundTruth
from membraind.vast.protocol import DEFAULT_PORT
from membraind.volumes.box import Box
from membraind.volumes.voxel_size import VoxelSizeNm

__all__ = [
    "PredictSpec", "TrainSpec", "FinetuneSpec", "Segment2DSpec", "VastSegmentationLayer", "ExportOnnxSpec", "PaintSpec",
    "ImportModelSpec", "EvaluateSpec", "JobSpec", "SPEC_TYPES",
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
    """Train a network on (partially) annotated ground truth into the run folder ``out``.

    The ground truth is label files (``em`` and ``labels``) or what is painted in a VAST
    segmentation layer (``vast``), found there by membraind.
    """

    kind: Literal["train"] = "train"
    em: Path | None = Field(None, description="folder of EM images or a TIFF stack (with labels; or give vast)")
    labels: Path | None = Field(None, description="folder of label images or a TIFF stack")
    vast: VastGroundTruth | None = Field(
        None, description="ground truth painted in a VAST segmentation layer (instead of em and labels)"
    )
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
    def _files_or_vast(self) -> "TrainSpec":
        check_ground_truth(self.em, self.labels, self.vast)
        return self

    @model_validator(mode="after")
    def _validation_pair(self) -> "TrainSpec":
        if (self.val_em is None) != (self.val_labels is None):
            raise ValueError("give both val_em and val_labels, or neither (then part of the data is held out)")
        return self

    @model_validator(mode="after")
    def _out_or_model(self) -> "TrainSpec":
        if not _out_or_model(self.out, self.model, "a run folder"):
            raise ValueError("give out (the run folder) or model (a lab model whose next version this run becomes)")
        return self

    @property
    def version(self) -> int | None:
        """The lab model version this run makes (``out`` is ``<models>/<model>/v<N>``), else None."""
        return _version(self.out, self.model)


def _out_or_model(out: Path | None, model: str | None, what: str) -> bool:
    """Whether one of ``out`` (``what``) and lab model ``model`` is given; a ValueError when both are,
    unless ``out`` is the version folder claimed for ``model``, ``<models>/<model>/v<N>``."""
    if model is None:
        return out is not None
    try:
        check_model_name(model)
    except InputError as exc:
        raise ValueError(str(exc)) from None
    if out is not None and (out.parent.name != model or not re.fullmatch(r"v[1-9]\d*", out.name)):
        raise ValueError(f"give out ({what}) or model (the next version of a lab model), not both; "
                         f"{model}'s versions are written to the models folder")  # fmt: skip
    return True


def _version(out: Path | None, model: str | None) -> int | None:
    """The version number of a lab model's claimed version folder ``out``, else None."""
    return int(out.name[1:]) if model is not None and out is not None else None


def check_ground_truth(em: Path | None, labels: Path | None, vast: VastGroundTruth | None) -> None:
    """Exactly one ground truth: ``em`` and ``labels`` (files), or ``vast`` (painted there); else a ValueError."""
    if vast is not None and (em is not None or labels is not None):
        raise ValueError("give either em and labels (label files) or vast (painted in VAST), not both")
    if vast is None and (em is None or labels is None):
        missing = " and ".join(name for name, value in (("em", em), ("labels", labels)) if value is None)
        raise ValueError(f"ground truth: give em and labels (label files; {missing} missing), or vast "
                         "(a VAST segmentation layer where membrane and interior are painted)")  # fmt: skip


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


class VastSegmentationLayer(StrictModel):
    """A VAST segmentation layer to show cells in: found by name, added when there is none."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    layer_name: str | None = Field(
        None, min_length=1, description="the layer's name (default: the output folder's name); a second run refreshes it"
    )


class Segment2DSpec(StrictModel):
    """Cut each section of a membrane-probability volume (or a box of it) into cells."""

    kind: Literal["segment2d"] = "segment2d"
    membrane: Path = Field(description="membrane probability: a predicted layer's .vsvi or folder, or images")
    out: Path
    mip: int | None = Field(None, ge=0, description="mip to segment (default: the first holding data)")
    sections: tuple[int, int] | None = Field(None, description="[first, last] sections, inclusive (default all)")
    box: Box | None = Field(
        None, description="segment only this box (half-open, at its mip; default mip 0), e.g. the part a prediction covered"
    )
    h: float | None = Field(None, gt=0, le=1, description="h-minima depth in probability units (default: config)")
    sigma: float | None = Field(None, ge=0)
    min_size: int | None = Field(None, ge=0)
    membrane_threshold: float | None = Field(None, gt=0, lt=1)
    overwrite: bool = False
    label_tiff: bool = True
    preview: bool = Field(True, description="write <out>/preview/section_<z>.png: each cell in its own colour")
    em: Path | None = Field(None, description="EM the membrane was predicted from, drawn under the preview cells")
    show_in_vast: VastSegmentationLayer | None = Field(
        None, description="also write the cells into this VAST segmentation layer (16-bit ids: at most 65535 cells)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> "Segment2DSpec":
        if self.sections is not None and not 0 <= self.sections[0] <= self.sections[1]:
            raise ValueError(f"sections must be [first, last] with 0 <= first <= last, got {list(self.sections)}")
        if self.sections is not None and self.box is not None:
            raise ValueError("give sections or box, not both (a box names its sections: z0 to z1)")
        return self

    @property
    def vast_layer_name(self) -> str:
        """The VAST layer the cells are shown in (``show_in_vast`` given)."""
        assert self.show_in_vast is not None
        return self.show_in_vast.layer_name or self.out.resolve().name


class PaintSpec(StrictModel):
    """Paint predicted cells (or membrane) into a VAST segmentation layer, for users to correct;
    never over voxels painted already."""

    kind: Literal["vast-paint"] = "vast-paint"
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    membrane: Path = Field(description="the predicted membrane layer: its store folder or .vsvi")
    segmentation_layer: int | str = Field(description="the VAST segmentation layer to paint into: its number or name")
    target: Annotated[Union[BoxRegion, Anchors], Field(discriminator="mode")] = Field(
        description="where to paint: a box, or cubes around anchor points"
    )
    mode: Literal["cells", "membrane"] = Field("cells", description="2D cells, or the membrane as one segment")
    threshold: float = Field(0.5, gt=0, lt=1, description="membrane mode: probability above which to paint")
    first_id: int = Field(2, ge=1, le=65535, description="first segment id to use (2, as mEMbrain)")

    def cubes(self) -> list[Box]:
        """The boxes to paint: the target's box, or each anchor's cube."""
        return [self.target.box] if isinstance(self.target, BoxRegion) else self.target.boxes()


class ExportOnnxSpec(StrictModel):
    """Export a model bundle to ONNX (metadata embedded)."""

    kind: Literal["export-onnx"] = "export-onnx"
    bundle: Path
    out: Path | None = Field(None, description="ONNX file (default: <bundle>/model.onnx)")


class EvaluateSpec(StrictModel):
    """Score a model against ground truth (label files or painted in VAST); overlays and scores to ``out``."""

    kind: Literal["evaluate"] = "evaluate"
    bundle: Path | None = Field(None, description="the model bundle to evaluate (or model)")
    model: str | None = Field(None, description="a lab model: NAME (its latest version when the job runs) or NAME@vN")
    em: Path | None = Field(None, description="EM images or TIFF stack (or give vast)")
    labels: Path | None = Field(None, description="labels matching em: scores besides the overlays")
    mapping: str | None = Field(None, description="label mapping of labels (default: config)")
    vast: VastGroundTruth | None = Field(
        None, description="ground truth painted in VAST (its mip, when not given: the model's)"
    )
    out: Path = Field(description="folder for the overlays, membrane probabilities and scores.json")
    runtime: Literal["torch", "onnx"] = "torch"

    @field_validator("mapping")
    @classmethod
    def _readable_mapping(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mapping(value)
        return value

    @model_validator(mode="after")
    def _one_model_and_ground_truth(self) -> "EvaluateSpec":
        if (self.bundle is None) == (self.model is None):
            raise ValueError("give bundle (a model bundle folder) or model (a lab model: NAME or NAME@vN), one of them")
        if self.model is not None:
            try:
                check_model_reference(self.model)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        if self.vast is not None and (self.em is not None or self.labels is not None):
            raise ValueError("give either em (and labels) or vast (painted in VAST), not both")
        if self.vast is None and self.em is None:
            raise ValueError("give em (EM images; with labels to score them) or vast (ground truth painted in VAST)")
        if self.labels is not None and self.em is None:
            raise ValueError("labels need their em")
        return self




class ImportModelSpec(StrictModel):
    """Make a model bundle, or a lab model's next version, from a network trained elsewhere:
    an ONNX file (inference only) or a PyTorch state dict of membraind's U-Net."""

    kind: Literal["import-model"] = "import-model"
    file: Path = Field(description="the network: a .onnx file, or a state dict (.safetensors, .pt, .pth, .ckpt)")
    out: Path | None = Field(None, description="the bundle folder to make (not with model: given for you)")
    model: str | None = Field(None, description="a lab model: the import becomes its next version, <models folder>/<model>/v<N>")
    name: str | None = Field(None, description="model name (default: the lab model's, else the file's name)")
    architecture: UNetConfig | None = Field(
        None, description="the U-Net the weights fit (state dict; default: [unet] of the configuration; ONNX: embedded)"
    )
    class_names: list[str] | None = Field(None, description="name of each output channel (default: by count)")
    onnx_outputs: Literal["probabilities", "logits"] | None = Field(None, description="ONNX: found by running it")
    normalization: IntensityNormalization | None = Field(None, description="how EM is normalised (default: config)")
    patch_size: int = Field(256, ge=16, description="patch side the network was trained on")
    mip: int = Field(0, ge=0, le=16, description="mip the network was trained at")
    voxel_size_nm: VoxelSizeNm | None = Field(None, description="(x, y, z) voxel size of its training data in nm")

    @model_validator(mode="after")
    def _out_or_model(self) -> "ImportModelSpec":
        if not _out_or_model(self.out, self.model, "a bundle folder"):
            raise ValueError("give out (the bundle folder to make) or model (a lab model whose next version this becomes)")
        return self

    @property
    def version(self) -> int | None:
        """The lab model version this import makes, else None."""
        return _version(self.out, self.model)

    @property
    def bundle(self) -> Path | None:
        """The bundle folder made: ``out``, or ``model/`` inside a lab model's version folder (None: not claimed yet)."""
        if self.out is None or self.model is None:
            return self.out
        return self.out / BUNDLE_DIR


SPEC_TYPES = (
    PredictSpec, TrainSpec, FinetuneSpec, Segment2DSpec, ExportOnnxSpec, PaintSpec, ImportModelSpec, EvaluateSpec,
)  # fmt: skip
JobSpec = Annotated[Union[SPEC_TYPES], Field(discriminator="kind")]
_JOB_SPEC = TypeAdapter(JobSpec)


def parse_spec(data: dict | str) -> object:
    """A job spec from a dict or JSON text (raises pydantic's ValidationError)."""
    return _JOB_SPEC.validate_json(data) if isinstance(data, str) else _JOB_SPEC.validate_python(data)

