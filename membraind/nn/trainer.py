"""Training a U-Net on sparse labels, with checkpoints, resume and cancellation.

A run directory holds everything of one training run:

- ``checkpoint.pt``: model, optimizer and progress after the last finished epoch
  (tensors and plain values only, loaded with ``weights_only=True``);
- ``history.csv`` and ``learning_curve.png``: rewritten after every epoch;
- ``model/``: the bundle of the best epoch so far (by validation membrane F1).

Running again into the same directory resumes after the last finished epoch, so a
killed run loses at most one epoch. Unannotated pixels (class 0) never reach the loss.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from membraind.atomic import atomic_path, write_text_atomic
from membraind.errors import Cancelled, InputError
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth
from membraind.groundtruth.sampler import PatchSampler
from membraind.groundtruth.settings import AugmentationSettings, SamplerSettings
from membraind.nn.bundle import Bundle, ModelMetadata, default_class_names, save_bundle
from membraind.nn.history import EpochRecord, plot_learning_curve, write_csv
from membraind.nn.evaluate import score
from membraind.nn.inference import predict_probabilities
from membraind.nn.loss import IGNORE, SparseSegmentationLoss
from membraind.nn.settings import TrainingSettings, TransferSettings, UNetConfig
from membraind.nn.device import autocast_dtype, resolve_device
from membraind.nn.transfer import plan_transfer
from membraind.nn.unet import UNet
from membraind.segment.metrics import ConfusionCounts

WARMUP = 0.03  # share of training spent warming the learning rate up

Progress = Callable[[float, str], None]


class TrainingCancelled(Cancelled):
    """Raised when a cancel request stopped training (the last checkpoint is kept)."""


@dataclass
class TrainingData:
    """Training and validation images, and where they came from (stored in the bundle)."""

    train: list[GroundTruthImage]
    validation: list[GroundTruthImage]
    sources: list[dict] = field(default_factory=list)


def split_validation(images: list[GroundTruthImage], fraction: float) -> tuple[list, list]:
    """Hold out whole images (the last ``fraction``), or, for one image, its bottom rows.

    A held-out band is erased from the training copy, so no training patch (which must
    be wholly annotated) can overlap it.
    """
    if len(images) >= 2:
        held = max(1, round(fraction * len(images)))
        return images[:-held], images[-held:]
    (only,) = images
    cut = int(round(only.labels.shape[0] * (1 - fraction)))
    train_labels = only.labels.copy()
    train_labels[cut:] = UNANNOTATED
    val_labels = np.full_like(only.labels, UNANNOTATED)
    val_labels[cut:] = only.labels[cut:]
    return [GroundTruthImage(only.name, only.em, train_labels)], [GroundTruthImage(only.name, only.em, val_labels)]


def _schedule(progress: float, kind: str) -> float:
    """Learning-rate factor at ``progress`` in [0, 1]: linear warm-up, then cosine decay."""
    if kind == "constant":
        return 1.0
    if progress < WARMUP:
        return max(progress / WARMUP, 0.01)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - WARMUP) / (1 - WARMUP))))


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class _Batches:
    """Draws one epoch of batches in a background thread, in a fixed order."""

    def __init__(self, draw: Callable[[], tuple[np.ndarray, np.ndarray]], count: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(draw, count), daemon=True)
        self._thread.start()

    def _fill(self, draw: Callable, count: int) -> None:
        for _ in range(count):
            if self._stop.is_set():
                return
            try:
                item = draw()
            except BaseException as exc:  # re-raised in the training thread
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Trainer:
    """Trains one network into ``run_dir`` (see the module docstring for its layout).

    It receives the configuration sections it uses: ``training``; the architecture
    (``unet``), ``normalization`` and patch size (``sampler``) of a new network, which a
    fine-tuned one takes from its ``parent``; the ``augmentation`` of its patches; and
    ``transfer`` when fine-tuning. Sections not given are their defaults.
    """

    def __init__(
        self,
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
    ) -> None:
        self.run_dir = Path(run_dir)
        self.data = data
        self.training = training
        self.sampler_settings = sampler or SamplerSettings()
        self.augmentation = augmentation or AugmentationSettings()
        self.name = name or self.run_dir.name
        self.parent = parent
        self.transfer = transfer if parent is not None else None
        self.device = resolve_device(self.training.device)
        if parent is not None:
            if parent.model is None:
                raise InputError(f"bundle {parent.path} holds only an ONNX network, which cannot be fine-tuned")
            self.architecture = parent.metadata.architecture
            self.normalization = parent.metadata.normalization
            self.patch_size = parent.metadata.patch_size
        else:
            self.architecture = unet or UNetConfig()
            self.normalization = (normalization or IntensityNormalization()).fit([gt.em for gt in data.train])
            self.patch_size = self.sampler_settings.patch_size
        weights = self.training.class_weights
        if weights is not None and len(weights) != self.architecture.classes:
            raise InputError(
                f"training.class_weights has {len(weights)} value(s) but the network has "
                f"{self.architecture.classes} classes; give one weight per class (interior, membrane[, third])"
            )
        if self.patch_size % self.architecture.multiple:
            raise InputError(
                f"patch size {self.patch_size} is not a multiple of {self.architecture.multiple} "
                f"(2^depth for a U-Net of depth {self.architecture.depth}); choose e.g. "
                f"{self.patch_size - self.patch_size % self.architecture.multiple}"
            )

    # -- setup ----------------------------------------------------------------------
    def _build_model(self) -> nn.Module:
        torch.manual_seed(self.training.seed)
        model = UNet(self.architecture)
        if self.parent is not None:
            model.load_state_dict(self.parent.model.state_dict())
        return model.to(self.device)

    def _samplers(self) -> tuple[PatchSampler, PatchSampler | None]:
        angle_step = self.sampler_settings.angle_step
        sampler = PatchSampler(
            self.data.train, self.patch_size, self.normalization, self.augmentation, angle_step, self.training.seed
        )
        replay = None
        if self.transfer is not None and self.transfer.mode == "episodic":
            replay = PatchSampler(self._parent_data(), self.patch_size, self.normalization, self.augmentation, angle_step)
        return sampler, replay

    def _parent_data(self) -> list[GroundTruthImage]:
        sources = self.parent.metadata.training.get("data", [])
        if not sources:
            raise InputError(
                f"episodic fine-tuning replays the parent's training data, but bundle {self.parent.path} "
                "does not record any; use another mode (e.g. --mode leaky)"
            )
        images = []
        for source in sources:
            try:
                images += load_ground_truth(Path(source["em"]), Path(source["labels"]), LabelMapping(values=source["mapping"]))
            except InputError as exc:
                raise InputError(f"episodic fine-tuning needs the parent's training data, which is unavailable: {exc}") from None
        return images

    def _draw_batch(self, sampler: PatchSampler, replay: PatchSampler | None) -> tuple[np.ndarray, np.ndarray]:
        size = self.training.batch_size
        from_replay = int(round(self.transfer.episodic_ratio * size)) if replay is not None else 0
        images, labels = sampler.batch(size - from_replay)
        if from_replay:
            old_images, old_labels = replay.batch(from_replay)
            images, labels = np.concatenate([images, old_images]), np.concatenate([labels, old_labels])
        return images, labels

    # -- the loop ----------------------------------------------------------------------
    def run(self, progress: Progress | None = None, cancel: Callable[[], bool] | None = None) -> Path:
        """Train (or resume) until the epochs or the time budget are spent; returns the bundle path."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        progress = progress or (lambda fraction, message: None)
        cancel = cancel or (lambda: False)
        t = self.training
        model = self._build_model()
        plan = plan_transfer(model, self.transfer, t.learning_rate)
        optimizer = torch.optim.AdamW(plan.groups, weight_decay=t.weight_decay)
        base_rates = [group["lr"] for group in optimizer.param_groups]
        amp_dtype = autocast_dtype(self.device) if t.amp else None
        use_amp = amp_dtype is not None
        scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        weights = torch.tensor(t.class_weights, dtype=torch.float32, device=self.device) if t.class_weights else None
        loss_fn = SparseSegmentationLoss(weights, t.dice_weight)

        state = self._resume(model, optimizer)
        if state["epoch"]:
            progress(state["epoch"] / t.epochs, f"resuming after epoch {state['epoch']} (checkpoint in {self.run_dir})")
        history: list[EpochRecord] = [EpochRecord.model_validate(r) for r in state["history"]]
        sampler, replay = self._samplers()
        validation = [(self.normalization.normalize_section(gt.em), gt.labels) for gt in self.data.validation]
        total_steps = t.epochs * t.steps_per_epoch
        budget = t.max_minutes * 60 if t.max_minutes else None
        elapsed = state["elapsed"]

        for epoch in range(state["epoch"], t.epochs):
            started = time.monotonic()
            sampler.reseed([t.seed, epoch])
            if replay is not None:
                replay.reseed([t.seed, epoch, 1])
            model.train()
            plan.keep_frozen()
            counts, loss_sum, steps = ConfusionCounts(), 0.0, 0
            batches = _Batches(lambda: self._draw_batch(sampler, replay), t.steps_per_epoch)

            def done(steps_done: int) -> float:
                """Share of the training done: by steps, or by time when a budget is set."""
                spent = (elapsed + time.monotonic() - started) / budget if budget else 0.0
                return min(1.0, max(steps_done / total_steps, spent))

            try:
                for step in range(t.steps_per_epoch):
                    if cancel():
                        raise TrainingCancelled(
                            f"training cancelled in epoch {epoch + 1}; resuming continues after epoch {epoch}"
                        )
                    factor = _schedule(done(epoch * t.steps_per_epoch + step), t.schedule)
                    for group, base in zip(optimizer.param_groups, base_rates):
                        group["lr"] = base * factor
                    images, labels = batches.next()
                    x = torch.from_numpy(images)[:, None].to(self.device, memory_format=memory_format)
                    y = torch.from_numpy(labels.astype(np.int64) - 1).to(self.device)  # class 0 -> IGNORE
                    with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
                        logits = model(x)
                        loss = loss_fn(logits.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    loss_sum += float(loss.detach())
                    steps += 1
                    predicted = (logits.argmax(1) + 1).to(torch.uint8).cpu().numpy()
                    counts.add(predicted, labels, labels != UNANNOTATED)
                    progress(
                        done(epoch * t.steps_per_epoch + step + 1),
                        f"epoch {epoch + 1}/{t.epochs} step {step + 1}/{t.steps_per_epoch} loss {loss_sum / steps:.4f}",
                    )
                    if budget and elapsed + time.monotonic() - started >= budget:
                        break
            finally:
                batches.close()
            val_loss, val_counts = self._validate(model, validation, loss_fn)
            elapsed += time.monotonic() - started
            record = EpochRecord(
                epoch=epoch + 1,
                seconds=round(elapsed, 2),
                learning_rate=optimizer.param_groups[-1]["lr"],
                train_loss=loss_sum / max(steps, 1),
                train_accuracy=counts.accuracy,
                train_membrane_f1=counts.membrane_f1,
                val_loss=val_loss,
                val_accuracy=val_counts.accuracy,
                val_membrane_f1=val_counts.membrane_f1,
            )
            history.append(record)
            self._finish_epoch(model, optimizer, history, elapsed)
            progress(
                done((epoch + 1) * t.steps_per_epoch),
                f"epoch {epoch + 1}/{t.epochs}: validation membrane F1 {record.val_membrane_f1:.4f}",
            )
            if budget and elapsed >= budget:
                break
        return self.run_dir / "model"

    @torch.no_grad()
    def _validate(
        self, model: nn.Module, validation: list, loss_fn: SparseSegmentationLoss
    ) -> tuple[float, ConfusionCounts]:
        """Cross-entropy (without the Dice term, comparable across settings) and counts."""
        counts, losses = ConfusionCounts(), []
        for image, labels in validation:
            probabilities = predict_probabilities(model, image, self.architecture.multiple, self.device)
            target = torch.from_numpy(labels.astype(np.int64) - 1)
            log_p = torch.from_numpy(np.log(np.clip(probabilities, 1e-7, 1.0)))[None]
            weight = loss_fn.cross_entropy.weight
            weight = weight.cpu() if weight is not None else None
            losses.append(float(nn.functional.nll_loss(log_p, target[None], weight=weight, ignore_index=IGNORE)))
            counts += score(probabilities, labels)
        return (float(np.mean(losses)) if losses else float("nan")), counts

    # -- persistence ---------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _resume(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        path = self._checkpoint_path()
        fresh = {"epoch": 0, "history": [], "elapsed": 0.0}
        if not path.exists():
            return fresh
        try:
            saved = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise InputError(
                f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start the run over"
            ) from None
        if saved.get("architecture") != self.architecture.model_dump_json():
            raise InputError(
                f"{self.run_dir} holds a run of another network architecture; choose another output folder or "
                "delete its checkpoint.pt to start over"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        return {"epoch": saved["epoch"], "history": saved["history"], "elapsed": saved["elapsed"]}

    def _finish_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, history: list[EpochRecord], elapsed: float) -> None:
        best = max(history, key=lambda r: r.val_membrane_f1)
        if best is history[-1]:
            save_bundle(self.run_dir / "model", model, self._metadata(history))
        else:  # keep the best weights; only the recorded history grows
            bundle_json = self.run_dir / "model" / "model.json"
            if bundle_json.exists():
                metadata = ModelMetadata.model_validate_json(bundle_json.read_text())
                metadata = metadata.model_copy(update={"history": [r.model_dump() for r in history]})
                write_text_atomic(bundle_json, metadata.model_dump_json(indent=2))
        write_csv(history, self.run_dir / "history.csv")
        plot_learning_curve(history, self.run_dir / "learning_curve.png")
        _save_atomic(
            {
                "epoch": history[-1].epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": [r.model_dump() for r in history],
                "elapsed": elapsed,
                "architecture": self.architecture.model_dump_json(),
            },
            self._checkpoint_path(),
        )

    def _metadata(self, history: list[EpochRecord]) -> ModelMetadata:
        training = {
            "settings": self.training.model_dump(),
            "sampler": self.sampler_settings.model_dump(),
            "augmentation": self.augmentation.model_dump(),
            "transfer": self.transfer.model_dump() if self.transfer else None,
            "data": self.data.sources,
            "best_epoch": max(history, key=lambda r: r.val_membrane_f1).epoch,
        }
        return ModelMetadata(
            name=self.name,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            architecture=self.architecture,
            class_names=default_class_names(self.architecture.classes),
            membrane_channel=1,
            normalization=self.normalization,
            patch_size=self.patch_size,
            training=training,
            history=[r.model_dump() for r in history],
            parent=str(self.parent.path) if self.parent is not None else None,
            parent_data=self.parent.metadata.training.get("data", []) if self.parent is not None else [],
        )


def load_training_data(
    em: Path,
    labels: Path,
    mapping: LabelMapping,
    validation_fraction: float,
    val_em: Path | None = None,
    val_labels: Path | None = None,
) -> TrainingData:
    """Load ground truth and set validation aside (a given validation set, else a split)."""
    train = load_ground_truth(em, labels, mapping)
    sources = [{"em": str(Path(em).resolve()), "labels": str(Path(labels).resolve()), "mapping": mapping.values}]
    if (val_em is None) != (val_labels is None):
        raise InputError("give both --val-em and --val-labels, or neither (then part of the training data is held out)")
    if val_em is not None:
        validation = load_ground_truth(val_em, val_labels, mapping)
    else:
        train, validation = split_validation(train, validation_fraction)
    return TrainingData(train, validation, sources)
