"""Carrying out a job spec: the one place that turns each kind into library calls.

The command line runs specs here in its own process; the daemon's engine process runs
them here too, keeping bundles and runtimes loaded between jobs (:class:`ModelCache`).
:func:`run_job` takes the whole :class:`~membraind.config.Settings` and hands each kind
only the sections it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from membraind_client.messages import JobResult  # one definition for the daemon and its clients
from membraind_client.progress import EtaClock, Progress, ProgressReporter

from membraind.config import Settings, with_overrides
from membraind.errors import InputError
from membraind.jobs.specs import (
    EvaluateSpec, ExportOnnxSpec, FinetuneSpec, ImportModelSpec, PaintSpec, PredictSpec, Segment2DSpec, TrainSpec,
)  # fmt: skip
from membraind.nn.bundle_layout import METADATA_FILE, read_metadata_json
from membraind.predict.request import VastSource, paths_for
from membraind.predict.settings import PredictSettings
from membraind.nn.starter import require_starter, starter_path
from membraind.nn.versions import ModelVersion, claim_next_version, latest_version, versions
from membraind.segment.settings import Segment2DSettings
from membraind.vast.paths import PathMap

if TYPE_CHECKING:  # torch is imported only when a training job runs
    from membraind.groundtruth.training_data import TrainingData
    from membraind.nn.evaluate import EvaluationResult
    from membraind.nn.trainer import Trainer

__all__ = ["JobResult", "ModelCache", "run_job", "predict_settings", "training_settings", "evaluate"]

Cancel = Callable[[], bool]


class ModelCache:
    """Bundles and runtimes kept loaded between prediction jobs (reloaded when the files change)."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[Any, Any]] = {}

    def get(self, path: Path, settings: PredictSettings) -> tuple[Any, Any]:
        """(bundle, runtime) for the bundle at ``path`` under ``settings``."""
        from membraind.nn.bundle import load_bundle
        from membraind.predict.runtimes import load_runtime

        path = Path(path).resolve()
        stamp = max((f.stat().st_mtime_ns for f in path.iterdir()), default=0) if path.is_dir() else 0
        key = (str(path), stamp, settings.runtime, settings.device, settings.precision)
        if key not in self._entries:
            self._entries = {k: v for k, v in self._entries.items() if k[0] != key[0]}  # drop stale versions
            bundle = load_bundle(path)
            self._entries[key] = (bundle, load_runtime(bundle, settings))
        return self._entries[key]


def predict_settings(spec: PredictSpec, predict: PredictSettings) -> PredictSettings:
    """The configured prediction settings with the spec's choices on top (validated)."""
    return with_overrides(
        predict, "the request", runtime=spec.engine, device=spec.device, outputs=spec.outputs,
        overwrite=True if spec.overwrite else None,
    )  # fmt: skip


def run_predict(
    spec: PredictSpec, predict: PredictSettings, progress: ProgressReporter, cancel: Cancel, cache: ModelCache | None = None,
    vast_paths: Callable[[str, int], list[PathMap]] = lambda host, port: [], models_dir: Path | None = None,
) -> JobResult:
    """Predict; results from a VAST source are shown in that VAST unless the spec says not to,
    handed over through its path mapping (the source's own, else ``vast_paths(host, port)``).
    Lab models named by the spec are their versions in ``models_dir`` now (latest resolved)."""
    from membraind.predict.run import run_prediction

    if spec.models:
        if models_dir is None:
            raise InputError("this prediction names lab models, but no models folder was given")
        spec = spec.with_models_resolved(models_dir)
    predict = predict_settings(spec, predict)
    loaded = [cache.get(path, predict) for path in spec.bundles] if cache else None
    report = run_prediction(
        spec, predict, bundles=[b for b, _ in loaded] if loaded else None,
        runtimes=[r for _, r in loaded] if loaded else None, progress=progress, cancel=cancel,
    )  # fmt: skip
    summary = report.summary()
    if isinstance(spec.volume, VastSource) and spec.show_in_vast:
        from membraind.vast.publish import show_prediction_in_vast

        region = spec.region()  # refreshed in mip-0 voxels, which is where the stores' layers lie
        paths = paths_for(spec.volume, vast_paths)
        layers = show_prediction_in_vast(spec.volume.host, spec.volume.port, spec.out, report.outputs, region, paths)
        summary += "; shown as VAST layer " + ", ".join(map(str, layers))
    return JobResult(outputs=[str(p) for p in report.outputs], summary=summary)


def training_settings(spec: TrainSpec, settings: Settings) -> Settings:
    """Settings with the spec's training choices on top (validated)."""
    training = with_overrides(
        settings.training, "the request", epochs=spec.epochs, steps_per_epoch=spec.steps_per_epoch,
        max_minutes=spec.max_minutes, device=spec.device, seed=spec.seed,
    )  # fmt: skip
    sampler = with_overrides(settings.sampler, "the request", patch_size=spec.patch_size)
    return settings.model_copy(update={"training": training, "sampler": sampler})


def training_data(spec: TrainSpec, settings: Settings) -> TrainingData:
    """The :class:`~membraind.groundtruth.training_data.TrainingData` a train or finetune spec names:
    label files, or what is painted in VAST now."""
    from membraind.groundtruth.label_mapping import parse_mapping
    from membraind.groundtruth.training_data import load_training_data

    if spec.vast is not None:
        from membraind.vast.painted import painted_training_data

        return painted_training_data(spec.vast, settings.training.validation_fraction)
    mapping = parse_mapping(spec.mapping) if spec.mapping else settings.groundtruth.mapping()
    return load_training_data(
        spec.em, spec.labels, mapping, settings.training.validation_fraction, spec.val_em, spec.val_labels
    )


def make_trainer(spec: TrainSpec, settings: Settings, data: TrainingData | None = None) -> Trainer:
    """The :class:`~membraind.nn.trainer.Trainer` for a train or finetune spec, its pieces built
    by :func:`~membraind.nn.training_setup.build_trainer` (``data`` loaded unless given)."""
    from membraind.nn.bundle import load_bundle
    from membraind.nn.training_setup import build_trainer

    settings = training_settings(spec, settings)
    if spec.out is None:
        raise InputError(f"the run of lab model {spec.model} has no version folder: submit it to the daemon or "
                         "run membraind train --model, either of which claims one")  # fmt: skip
    if spec.restart:
        (spec.out / "checkpoint.pt").unlink(missing_ok=True)
    if data is None:
        data = training_data(spec, settings)
    if data.ground_truth is not None and not data.sources:  # painted in VAST: kept, for a child to replay
        from membraind.groundtruth.training_data import save_sources

        data.sources = save_sources(data, spec.out / "ground_truth")
    transfer = None
    start = starting_point(spec, settings.unet.classes)
    parent = load_bundle(start) if start is not None else None
    if isinstance(spec, FinetuneSpec):
        transfer = with_overrides(
            settings.transfer, "the request", mode=spec.mode, leaky_factor=spec.leaky_factor,
            episodic_ratio=spec.episodic_ratio,
        )  # fmt: skip
    elif parent is not None:
        transfer = settings.transfer
    trainer = build_trainer(
        spec.out, data, settings.training, unet=settings.unet, normalization=settings.normalization,
        sampler=settings.sampler, augmentation=settings.augmentation, name=spec.name or spec.model, parent=parent,
        transfer=transfer, voxel_size=training_voxel_size(spec, data),
    )  # fmt: skip
    trainer.bundle = trainer.bundle.model_copy(update={"version": spec.version})
    return trainer


def starting_point(spec: TrainSpec, classes: int = 2) -> Path | None:
    """The bundle a train or finetune run starts from (None: random weights).

    A finetune starts from its ``parent``; without one, from its lab model's latest
    version, and where the lab model has no version yet (or no lab model is named), from
    the starter model. A train starts from the starter when ``start_from`` says so or,
    left out, when it makes a lab model's version (a lab's first version, e.g. the
    daemon's loop); else from scratch. Where this installation has no starter model, or
    its classes are not the ``classes`` configured (``[unet] classes``), a default falls
    back to random weights; an explicit ``start_from = "starter"`` without a starter is an
    InputError saying so.
    """
    if isinstance(spec, FinetuneSpec):
        if spec.parent is not None:
            return spec.parent
        if spec.start_from is None and spec.model is not None and spec.out is not None:
            earlier = [v for v in versions(spec.out.parent.parent, spec.model) if v.version < (spec.version or 0)]
            if earlier:
                return previous_version(spec).bundle
        return require_starter()  # there is nothing else to fine-tune
    wanted = spec.start_from or ("starter" if spec.model is not None else "scratch")
    if wanted == "scratch":
        return None
    if spec.start_from == "starter":
        return require_starter()
    found = starter_path()
    return found if found is not None and read_metadata_json(found)["architecture"].get("classes", 2) == classes else None


def previous_version(spec: TrainSpec) -> ModelVersion:
    """The version of ``spec``'s lab model that this run fine-tunes: the latest one older than its own."""
    assert spec.model is not None and spec.out is not None
    return latest_version(spec.out.parent.parent, spec.model, below=spec.version)


def claim_version(spec: Any, models: Path) -> Any:
    """``spec`` (a train, finetune or import-model spec) with the folder of its lab model's next
    version as ``out``; unchanged without a model, when it has its version already, or for other kinds."""
    if not isinstance(spec, (TrainSpec, ImportModelSpec)) or spec.model is None or spec.out is not None:
        return spec
    return spec.model_copy(update={"out": claim_next_version(models, spec.model).run})


def training_outcome(bundle: Path) -> str:
    """Why the run of ``bundle`` stopped and which epoch it holds, as its metadata records it."""
    from membraind.nn.bundle import read_metadata

    outcome = read_metadata(bundle).outcome if (Path(bundle) / METADATA_FILE).is_file() else None
    return outcome.describe() if outcome is not None else "no epoch finished: no model yet"


def training_voxel_size(spec: TrainSpec, data: TrainingData) -> tuple[float, float, float] | None:
    """The voxel size of a run's EM: the spec's, else VAST's (at the mip read) or what the EM's
    TIFF tags record (None: unknown)."""
    from membraind.volumes.voxel_size import recorded_voxel_size

    if spec.voxel_size_nm is not None:
        return spec.voxel_size_nm
    if spec.em is None:
        return data.voxel_size
    recorded = recorded_voxel_size(spec.em)
    return recorded[0] if recorded else None


def training_result(run_dir: Path, bundle: Path) -> JobResult:
    """The outputs of a finished training run; the summary says why it stopped and which epoch was kept."""
    curve = Path(run_dir) / "learning_curve.png"
    return JobResult(
        outputs=[str(bundle), str(curve), str(Path(run_dir) / "history.csv")],
        summary=f"{training_outcome(bundle)}; model bundle: {bundle}; learning curve: {curve}",
    )


def run_train(spec: TrainSpec, settings: Settings, progress: ProgressReporter, cancel: Cancel) -> JobResult:
    """Train (or fine-tune), resuming a run left in ``spec.out``. Warnings about the ground
    truth (an implausible membrane share) end the summary, where the user sees them."""
    data = training_data(spec, settings)
    trainer = make_trainer(spec, settings, data)
    result = training_result(spec.out, trainer.run(progress, cancel))
    warnings = list(dict.fromkeys(gt.warning for gt in [*data.train, *data.validation] if gt.warning))
    if warnings:
        result.summary += "".join(f"; warning: {warning}" for warning in warnings)
    return result


def segment_settings(spec: Segment2DSpec, segment2d: Segment2DSettings) -> Segment2DSettings:
    """The configured 2D segmentation settings with the spec's choices on top (validated)."""
    return with_overrides(
        segment2d, "the request", h=spec.h, sigma=spec.sigma, min_size=spec.min_size,
        membrane_threshold=spec.membrane_threshold,
    )  # fmt: skip


def run_segment2d(spec: Segment2DSpec, segment2d: Segment2DSettings, progress: ProgressReporter, cancel: Cancel) -> JobResult:
    """Segment the membrane volume section by section."""
    from membraind.segment.run import run_segmentation

    sections = range(spec.sections[0], spec.sections[1] + 1) if spec.sections else None
    report = run_segmentation(
        spec.membrane, spec.out, segment_settings(spec, segment2d), mip=spec.mip, sections=sections, box=spec.box,
        overwrite=spec.overwrite, label_tiff=spec.label_tiff, em=spec.em, preview=spec.preview,
        progress=progress, cancel=cancel,
    )  # fmt: skip
    summary = report.summary()
    if spec.show_in_vast is not None:
        from membraind.vast.client import VastClient
        from membraind.vast.segmentation_layer import show_segmentation_in_vast

        with VastClient(spec.show_in_vast.host, spec.show_in_vast.port) as client:
            layer, cells = show_segmentation_in_vast(client, spec.vast_layer_name, report)
        summary += f"; {cells} cells shown in VAST segmentation layer {layer} {spec.vast_layer_name!r}"
    return JobResult(outputs=[str(p) for p in report.outputs], summary=summary)


def run_export_onnx(spec: ExportOnnxSpec, progress: ProgressReporter, cancel: Cancel) -> JobResult:
    """Export a bundle to ONNX."""
    from membraind.nn.bundle import load_bundle
    from membraind.nn.onnx_io import export_onnx

    out = export_onnx(load_bundle(spec.bundle), spec.out or spec.bundle / "model.onnx")
    progress(Progress(phase="exporting", fraction=1.0, message=f"exported {out}", milestone=True))
    return JobResult(outputs=[str(out)], summary=f"ONNX model {out}")


def evaluate(spec: EvaluateSpec, settings: Settings, models_dir: Path | None = None) -> EvaluationResult:
    """Score ``spec``'s model against its ground truth (label files, or painted in VAST, read at
    the model's mip unless the spec gives one); overlays and ``scores.json`` go to ``spec.out``.
    The one evaluation of both the ``evaluate`` command and the evaluate job."""
    from membraind.groundtruth.label_mapping import parse_mapping
    from membraind.nn.bundle import read_metadata
    from membraind.nn.evaluate import evaluate_bundle, evaluate_images
    from membraind.nn.versions import resolve_model

    if spec.model is not None:
        if models_dir is None:
            raise InputError(f"model {spec.model}: no models folder was given to find this lab model in")
        bundle = resolve_model(models_dir, spec.model).bundle
    else:
        bundle = spec.bundle
    if spec.vast is not None:
        from membraind.vast.painted import read_painted_from

        source = spec.vast
        if "mip" not in source.model_fields_set:  # learned at another mip: scored where it predicts
            source = source.model_copy(update={"mip": read_metadata(bundle).mip})
        images, _, _ = read_painted_from(source)
        result = evaluate_images(bundle, [(gt.name, gt.em, gt.labels) for gt in images], spec.out, spec.runtime,
                                 settings.segment2d)  # fmt: skip
    else:
        mapping = parse_mapping(spec.mapping) if spec.mapping else settings.groundtruth.mapping()
        result = evaluate_bundle(bundle, spec.em, spec.labels, mapping if spec.labels else None, spec.out,
                                 spec.runtime, settings.segment2d)  # fmt: skip
    result.save(spec.out / "scores.json")
    return result


def run_evaluate(spec: EvaluateSpec, settings: Settings, progress: ProgressReporter, models_dir: Path | None) -> JobResult:
    """Evaluate as a job: the summary states the scores."""
    result = evaluate(spec, settings, models_dir)
    progress(Progress(phase="evaluating", fraction=1.0, message=result.summary(), milestone=True))
    return JobResult(outputs=[str(spec.out / "scores.json"), *map(str, result.written)], summary=result.summary())


def run_paint(spec: PaintSpec, segment2d: Segment2DSettings, progress: ProgressReporter, cancel: Cancel) -> JobResult:
    """Paint the predicted membrane's cells (or membrane) into a VAST segmentation layer where it is unpainted."""
    from membraind.vast.client import VastClient
    from membraind.vast.paint import paint_around_anchors
    from membraind.volumes.open_volume import open_volume

    membrane = open_volume(spec.membrane)
    try:
        with VastClient(spec.host, spec.port) as client:
            layer = client.layer_number(spec.segmentation_layer)
            report = paint_around_anchors(
                client, layer, membrane, spec.cubes(), mode=spec.mode, settings=segment2d, threshold=spec.threshold,
                first_id=spec.first_id, progress=progress, cancel=cancel,
            )  # fmt: skip
    finally:
        membrane.close()
    return JobResult(outputs=[], summary=f"{report.summary()} (VAST segmentation layer {spec.segmentation_layer!r})")


def run_import_model(spec: ImportModelSpec, settings: Settings, progress: ProgressReporter) -> JobResult:
    """Import a network trained elsewhere as a bundle (an ONNX file or a state dict, by its suffix)."""
    from membraind.nn.onnx_io import import_onnx, import_state_dict

    if spec.bundle is None:
        raise InputError(f"the import into lab model {spec.model} has no version folder: submit it to the daemon or "
                         "run membraind import-model --model, either of which claims one")  # fmt: skip
    name = spec.name or spec.model or spec.file.stem
    normalization = spec.normalization or settings.normalization
    recorded = {"mip": spec.mip, "voxel_size_nm": spec.voxel_size_nm, "version": spec.version}
    if spec.file.suffix.lower() == ".onnx":
        bundle = import_onnx(spec.file, spec.bundle, name, normalization, spec.patch_size, spec.class_names,
                             spec.onnx_outputs, spec.architecture, **recorded)  # fmt: skip
    else:
        bundle = import_state_dict(spec.file, spec.bundle, spec.architecture or settings.unet, name, normalization,
                                   spec.patch_size, spec.class_names, **recorded)  # fmt: skip
    what = f"lab model {spec.model} v{spec.version}" if spec.version else "model bundle"
    progress(Progress(phase="importing", fraction=1.0, message=f"imported {spec.file} as {what}", milestone=True))
    return JobResult(outputs=[str(bundle.path)], summary=f"{spec.file} imported as {what}: {bundle.path} "
                                                         f"({bundle.metadata.source}, {len(bundle.metadata.class_names)} classes)")


def run_job(spec: Any, settings: Settings, progress: ProgressReporter, cancel: Cancel, cache: ModelCache | None = None) -> JobResult:
    """Carry out any job spec, handing its kind the settings sections it uses; its progress
    reports reach ``progress`` with the time left estimated."""
    progress = EtaClock(progress)  # the one place the estimate is made, for the CLI and the daemon alike
    if isinstance(spec, PredictSpec):
        return run_predict(spec, settings.predict, progress, cancel, cache, vast_paths=settings.service.vast_paths,
                           models_dir=settings.service.models_path())  # fmt: skip
    if isinstance(spec, TrainSpec):  # FinetuneSpec too; assembling a trainer takes most sections
        return run_train(spec, settings, progress, cancel)
    if isinstance(spec, Segment2DSpec):
        return run_segment2d(spec, settings.segment2d, progress, cancel)
    if isinstance(spec, ExportOnnxSpec):
        return run_export_onnx(spec, progress, cancel)
    if isinstance(spec, EvaluateSpec):
        return run_evaluate(spec, settings, progress, settings.service.models_path())
    if isinstance(spec, PaintSpec):
        return run_paint(spec, settings.segment2d, progress, cancel)
    if isinstance(spec, ImportModelSpec):
        return run_import_model(spec, settings, progress)
    raise TypeError(f"unknown job spec {type(spec).__name__}")
