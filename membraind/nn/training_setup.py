"""Assembling a training run: the pieces the trainer receives, for training and fine-tuning.

From the ground truth and the configuration sections a run uses (and, to fine-tune, a
parent bundle and transfer settings) this builds the network, optimizer, learning-rate schedule, loss, training
batches, validation images and the metadata of the bundles to come, and hands them to a
:class:`~membraind.nn.trainer.Trainer`, which only trains.
"""

from __future__ import annotations

from pathlib import Path

import torch

from membraind.errors import InputError
from membraind.groundtruth.batches import TrainingBatches
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.classes import CLASS_NAMES
from membraind.groundtruth.painted_share import painted_share, patch_min_painted, unpainted_active
from membraind.groundtruth.pairs import GroundTruthImage
from membraind.groundtruth.sampler import AUTO_LARGEST, PatchSampler
from membraind.groundtruth.settings import AugmentationSettings, SamplerSettings
from membraind.groundtruth.training_data import TrainingData, load_sources
from membraind.nn.bundle import Bundle, ModelMetadata, default_class_names
from membraind.nn.device import resolve_device
from membraind.nn.loss import MaskUnannotated, SparseSegmentationLoss
from membraind.nn.schedule import LearningRateSchedule
from membraind.nn.settings import TrainingSettings, TransferSettings, UNetConfig
from membraind.nn.trainer import Trainer
from membraind.nn.transfer import plan_transfer
from membraind.nn.unpainted import UnpaintedLearning
from membraind.nn.unet import UNet
from membraind.volumes.voxel_size import VoxelSize


def build_trainer(
    run_dir: Path,
    data: TrainingData,
    training: TrainingSettings,
    *,
    unet: UNetConfig | None = None,
    normalization: IntensityNormalization | None = None,
    sampler: SamplerSettings | None = None,
    augmentation: AugmentationSettings | None = None,
    name: str | None = None,
    parent: Bundle | None = None,
    transfer: TransferSettings | None = None,
    voxel_size: VoxelSize | None = None,
) -> Trainer:
    """The trainer of a run into ``run_dir``: from scratch, or fine-tuning ``parent`` as ``transfer`` says.

    It takes the configuration sections a run uses: ``training``; the architecture
    (``unet``) and ``normalization`` of a new network, which a fine-tuned one takes from
    its ``parent``; the patch size (``sampler``) and the ``augmentation`` of its patches.
    Sections not given are their defaults. A patch size not given is chosen from the
    painted regions: the largest that fits, up to 128 px (up to the parent's patch size
    when fine-tuning), recorded in the bundle. ``voxel_size`` (nm) is the training EM's,
    stored in the bundle, else the data's own (read from VAST); a fine-tuned bundle keeps
    its parent's when neither is known. The bundle records the mip the data were read at
    and, for ground truth painted in VAST, what was painted (``data.ground_truth``).
    Unpainted-pixel learning (``training.unpainted``) is on or off as its mode says (auto:
    by the painted share of the training images); while it is on, patches reach into
    unpainted EM unless ``sampler.min_painted`` says otherwise. Both are recorded.
    """
    sampler = sampler or SamplerSettings()
    augmentation = augmentation or AugmentationSettings()
    transfer = transfer if parent is not None else None
    device = resolve_device(training.device)
    if parent is not None:
        if parent.model is None:
            raise InputError(f"bundle {parent.path} holds only an ONNX network, which cannot be fine-tuned")
        architecture, normalization = parent.metadata.architecture, parent.metadata.normalization
        largest = parent.metadata.patch_size  # what the parent learned on, unless the painting is narrower
    else:
        architecture = unet or UNetConfig()
        normalization = (normalization or IntensityNormalization()).fit([gt.em for gt in data.train])
        largest = AUTO_LARGEST
    _check_fit(architecture, sampler.patch_size, training)
    _check_classes(architecture, [*data.train, *data.validation], parent)
    share = painted_share(data.train)
    learn_unpainted = unpainted_active(training.unpainted, share)
    min_painted = patch_min_painted(sampler, learn_unpainted)
    patches = PatchSampler(
        data.train, sampler.patch_size, normalization, augmentation, sampler.angle_step, training.seed,
        multiple=architecture.multiple, largest=largest, min_painted=min_painted,
    )  # fmt: skip
    patch_size = patches.patch_size

    torch.manual_seed(training.seed)  # the same seed initialises the same network
    model = UNet(architecture)
    if parent is not None:
        model.load_state_dict(parent.model.state_dict())
    model = model.to(device)
    rate = transfer.learning_rate if transfer is not None and transfer.learning_rate else training.learning_rate
    plan = plan_transfer(model, transfer, rate)
    optimizer = torch.optim.AdamW(plan.groups, weight_decay=training.weight_decay)
    schedule = LearningRateSchedule(optimizer, training.schedule)
    model = model.to(memory_format=torch.channels_last if training.channels_last else torch.contiguous_format)
    unpainted = UnpaintedLearning(model, training.unpainted) if learn_unpainted else None
    weights = torch.tensor(training.class_weights, dtype=torch.float32, device=device) if training.class_weights else None
    loss = MaskUnannotated(SparseSegmentationLoss(weights, training.dice_weight))

    replay = None
    if transfer is not None and transfer.mode == "episodic":
        replay = PatchSampler(_parent_images(parent), patch_size, normalization, augmentation, sampler.angle_step)
    batches = TrainingBatches(
        patches, training.batch_size, training.seed, replay, transfer.episodic_ratio if replay is not None else 0.0
    )
    validation = [(normalization.normalize_section(gt.em), gt.labels) for gt in data.validation]
    recorded = {
        "settings": training.model_dump(),
        "sampler": sampler.model_dump(),
        "augmentation": augmentation.model_dump(),
        "transfer": transfer.model_dump() if transfer else None,
        "data": data.sources,
        # what auto decided, and from what (the settings above hold the mode asked for)
        "unpainted": {"active": learn_unpainted, "painted_share": round(share, 4), "min_painted": min_painted},
    }
    voxel_size = voxel_size or data.voxel_size
    if voxel_size is None and parent is not None:
        voxel_size = parent.metadata.voxel_size_nm
    bundle = _bundle_metadata(
        name or Path(run_dir).name, architecture, normalization, patches, recorded, parent, voxel_size
    ).model_copy(update={"mip": data.mip, "ground_truth": data.ground_truth})
    return Trainer(
        run_dir, model, loss, optimizer, schedule, batches, validation, bundle, training, device, plan, unpainted
    )  # fmt: skip


def _check_classes(architecture: UNetConfig, images: list[GroundTruthImage], parent: Bundle | None) -> None:
    """Labels whose classes the network has, or an error naming the labels and the class."""
    for gt in images:
        top = int(gt.labels.max(initial=0))
        if top > architecture.classes:
            network = f"the parent bundle {parent.path}" if parent is not None else "the network"
            names = ", ".join(CLASS_NAMES[c] for c in range(1, architecture.classes + 1))
            raise InputError(
                f"labels {gt.labels_from or gt.name} hold class {top} ({CLASS_NAMES.get(top, '?')}), but {network} has "
                f"{architecture.classes} classes ({names}): map that gray value to 0 (not annotated) with --mapping, "
                f"or train a {top}-class network ([unet] classes = {top})"
            )


def _check_fit(architecture: UNetConfig, patch_size: int | None, training: TrainingSettings) -> None:
    """Class weights and a given patch size that fit the network, or an error saying what does."""
    weights = training.class_weights
    if weights is not None and len(weights) != architecture.classes:
        raise InputError(
            f"training.class_weights has {len(weights)} value(s) but the network has "
            f"{architecture.classes} classes; give one weight per class (interior, membrane[, third])"
        )
    if patch_size is not None and patch_size % architecture.multiple:
        raise InputError(
            f"patch size {patch_size} is not a multiple of {architecture.multiple} "
            f"(2^depth for a U-Net of depth {architecture.depth}); choose e.g. "
            f"{patch_size - patch_size % architecture.multiple}"
        )


def _parent_images(parent: Bundle) -> list[GroundTruthImage]:
    """The parent's own training images, replayed by episodic fine-tuning."""
    sources = parent.metadata.training.get("data", [])
    if not sources:
        raise InputError(
            f"episodic fine-tuning replays the parent's training data, but bundle {parent.path} "
            "does not record any; use another mode (e.g. --mode leaky)"
        )
    try:
        return load_sources(sources)
    except InputError as exc:
        raise InputError(f"episodic fine-tuning needs the parent's training data, which is unavailable: {exc}") from None


def _bundle_metadata(
    name: str,
    architecture: UNetConfig,
    normalization: IntensityNormalization,
    patches: PatchSampler,
    training: dict,
    parent: Bundle | None,
    voxel_size: VoxelSize | None,
) -> ModelMetadata:
    """What every bundle of the run records besides its history, best epoch and time written."""
    return ModelMetadata(
        name=name,
        architecture=architecture,
        class_names=default_class_names(architecture.classes),
        membrane_channel=1,
        normalization=normalization,
        patch_size=patches.patch_size,
        patch_size_automatic=patches.automatic,
        voxel_size_nm=voxel_size,
        training=training,
        parent=str(parent.path) if parent is not None else None,
        parent_data=parent.metadata.training.get("data", []) if parent is not None else [],
    )
