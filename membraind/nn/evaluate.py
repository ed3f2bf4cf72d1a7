"""Evaluating a bundle on sample images: overlays to look at, scores where labels exist."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from skimage.measure import label

from membraind.errors import InputError
from membraind.groundtruth.classes import CLASS_COLOURS, INTERIOR, MEMBRANE, UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth, read_em
from membraind.groundtruth.preview import tint
from membraind.nn.bundle import Bundle, load_bundle
from membraind.nn.inference import classes_from_logits, classes_from_probabilities, pad_to_multiple, predict_probabilities
from membraind.segment.instances import segment_section
from membraind.segment.metrics import ConfusionCounts, SegmentationScores, score_segmentation
from membraind.segment.settings import Segment2DSettings
from membraind.volumes.image_files import write_image
from membraind.volumes.sections import list_sections

if TYPE_CHECKING:
    import torch

SectionRuntime = Callable[[np.ndarray], np.ndarray]  # normalised 2D image -> (C, H, W) probabilities


@dataclass
class EvaluationRow:
    """Scores of one image; instance scores only where its labels are complete."""

    name: str
    membrane_f1: float
    pixel_error: float
    instances: SegmentationScores | None = None


@dataclass
class EvaluationResult:
    """Per-image scores (when labels were given) and the files written."""

    rows: list[EvaluationRow] = field(default_factory=list)
    total: ConfusionCounts = field(default_factory=ConfusionCounts)
    written: list[Path] = field(default_factory=list)

    def table(self) -> str:
        """A readable summary."""
        if not self.rows:
            return f"wrote {len(self.written)} overlay/probability images (no labels given, no scores)"
        lines = [f"{'image':24s} {'membrane F1':>12s} {'pixel error':>12s} {'VI split':>9s} {'VI merge':>9s} {'Rand err':>9s}"]
        lines += [f"{r.name:24s} {r.membrane_f1:12.4f} {r.pixel_error:12.4f} {_instance_columns(r.instances)}" for r in self.rows]
        lines.append(
            f"{'all':24s} {self.total.membrane_f1:12.4f} {1 - self.total.accuracy:12.4f} "
            f"{_instance_columns(self.mean_instances())}"
        )
        if any(r.instances is None for r in self.rows):
            lines.append("(VI and adapted Rand error need completely annotated labels; images with unannotated pixels show -)")
        return "\n".join(lines)


    def summary(self) -> str:
        """One line: the scores over all images, or what was written when nothing was scored."""
        if not self.rows:
            return self.table()
        return (f"membrane F1 {self.total.membrane_f1:.4f}, pixel error {1 - self.total.accuracy:.4f} "
                f"over {len(self.rows)} image(s); {len(self.written)} overlay/probability images written")  # fmt: skip

    def save(self, path: Path) -> Path:
        """Write the scores as JSON (per image and over all) to ``path``."""
        rows = [{"image": r.name, "membrane_f1": r.membrane_f1, "pixel_error": r.pixel_error,
                 "instances": asdict(r.instances) if r.instances else None} for r in self.rows]  # fmt: skip
        total = {"membrane_f1": self.total.membrane_f1, "pixel_error": 1 - self.total.accuracy} if self.rows else None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"images": rows, "all": total}, indent=2), encoding="utf-8")
        return Path(path)

    def mean_instances(self) -> SegmentationScores | None:
        """Instance scores averaged over the images that have them (ISBI 2012 averages per section)."""
        scored = [r.instances for r in self.rows if r.instances is not None]
        if not scored:
            return None
        keys = ("vi_split", "vi_merge", "adapted_rand")
        return SegmentationScores(*(float(np.mean([getattr(s, k) for s in scored])) for k in keys))

    def add(
        self, name: str, probabilities: np.ndarray, membrane_channel: int, truth: np.ndarray, segment2d: Segment2DSettings
    ) -> EvaluationRow:
        """Score one image's class ``probabilities`` against its ``truth`` classes."""
        counts = score(probabilities, truth)
        self.total += counts
        instances = score_instances(probabilities[membrane_channel], truth, segment2d)
        row = EvaluationRow(name, counts.membrane_f1, 1 - counts.accuracy, instances)
        self.rows.append(row)
        return row


def _instance_columns(scores: SegmentationScores | None) -> str:
    if scores is None:
        return f"{'-':>9s} {'-':>9s} {'-':>9s}"
    return f"{scores.vi_split:9.4f} {scores.vi_merge:9.4f} {scores.adapted_rand:9.4f}"


def score_instances(membrane: np.ndarray, truth: np.ndarray, settings: Segment2DSettings) -> SegmentationScores | None:
    """VI and adapted Rand of the 2D segmentation of ``membrane`` against the cells of ``truth``.

    The true cells are the 4-connected regions of interior class; ``None`` when ``truth``
    has unannotated pixels (partial labels do not delimit cells).
    """
    if (truth == UNANNOTATED).any():
        return None
    cells = label(truth == INTERIOR, connectivity=1)
    if not cells.any():
        return None
    return score_segmentation(segment_section(np.clip(membrane, 0, 1), settings), cells)


def make_runtime(bundle: Bundle, runtime: str = "torch", device: str = "cpu") -> SectionRuntime:
    """A function from a normalised 2D image to class probabilities (C, H, W)."""
    if runtime == "onnx" or bundle.model is None:
        from membraind.nn.onnx_io import OnnxPredictor, export_onnx

        path = bundle.onnx_path or (bundle.path / "model.onnx")
        if not path.exists():
            path = export_onnx(bundle, path)
        predictor = OnnxPredictor(path)
        multiple = bundle.metadata.architecture.multiple

        def run_onnx(image: np.ndarray) -> np.ndarray:
            padded, (h, w) = pad_to_multiple(image, multiple)
            return predictor.predict(padded[None, None].astype(np.float32))[0, :, :h, :w]

        return run_onnx
    import torch

    model, multiple, torch_device = bundle.model.to(device), bundle.metadata.architecture.multiple, torch.device(device)
    return lambda image: predict_probabilities(model, image, multiple, torch_device)


def score_classes(predicted: np.ndarray, labels: np.ndarray) -> ConfusionCounts:
    """Counts of the ``predicted`` label classes against ``labels`` over its annotated pixels."""
    return ConfusionCounts().add(predicted, labels, labels != UNANNOTATED)


def score(probabilities: np.ndarray, labels: np.ndarray) -> ConfusionCounts:
    """Counts of one image's predicted classes (from probabilities (C, H, W)) against ``labels``."""
    return score_classes(classes_from_probabilities(probabilities), labels)


def score_batch(logits: torch.Tensor, labels: np.ndarray) -> ConfusionCounts:
    """Counts of a batch's predicted classes (from logits (N, C, H, W)) against ``labels`` (N, H, W)."""
    return score_classes(classes_from_logits(logits), labels)


def membrane_f1(bundle: Bundle, images: list[GroundTruthImage], device: str = "cpu") -> float:
    """Membrane F1 of ``bundle`` over the annotated pixels of ``images`` (all counted together)."""
    runtime = make_runtime(bundle, "torch", device)
    total = ConfusionCounts()
    for gt in images:
        total += score(runtime(bundle.metadata.normalization.normalize_section(gt.em)), gt.labels)
    return total.membrane_f1


def membrane_overlay(em_normalised: np.ndarray, membrane: np.ndarray) -> np.ndarray:
    """RGB: the EM in gray with the membrane probability shown in the membrane colour."""
    return tint(em_normalised, np.asarray(CLASS_COLOURS[MEMBRANE]), 0.6 * np.clip(membrane, 0, 1))


def evaluate_bundle(
    bundle_path: Path,
    em: Path,
    labels: Path | None,
    mapping: LabelMapping | None,
    out: Path,
    runtime: str = "torch",
    segment2d: Segment2DSettings | None = None,
) -> EvaluationResult:
    """Predict every section of ``em``; write overlays and probabilities; score against ``labels``."""
    if labels is not None:
        if mapping is None:
            raise InputError("scoring needs a label mapping (--mapping)")
        pairs = [(gt.name, gt.em, gt.labels) for gt in load_ground_truth(em, labels, mapping)]
    else:
        pairs = [(s.name, read_em(s), None) for s in list_sections(em, "EM")]
    return evaluate_images(bundle_path, pairs, out, runtime, segment2d)


def evaluate_images(
    bundle_path: Path,
    pairs: list[tuple[str, np.ndarray, np.ndarray | None]],
    out: Path,
    runtime: str = "torch",
    segment2d: Segment2DSettings | None = None,
) -> EvaluationResult:
    """Predict each ``(name, EM, classes or None)``; write overlays and probabilities to ``out``;
    score the images that have classes."""
    bundle = load_bundle(bundle_path)
    predict = make_runtime(bundle, runtime)
    norm, channel = bundle.metadata.normalization, bundle.metadata.membrane_channel
    result = EvaluationResult()
    for name, pixels, truth in pairs:
        image = norm.normalize_section(pixels)
        probabilities = predict(image)
        membrane = probabilities[channel]
        result.written.append(write_image(Path(out) / f"{name}_membrane.png", np.rint(membrane * 255).astype(np.uint8)))
        result.written.append(write_image(Path(out) / f"{name}_overlay.png", membrane_overlay(image, membrane)))
        if truth is not None:
            result.add(name, probabilities, channel, truth, segment2d or Segment2DSettings())
    return result
