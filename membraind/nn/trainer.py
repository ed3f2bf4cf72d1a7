"""Training a U-Net on sparse labels, with checkpoints, resume and cancellation.

The trainer only trains: it receives its pieces (model, loss, optimizer, learning-rate
schedule, training batches, validation images and the bundle's metadata), which
:func:`membraind.nn.training_setup.build_trainer` builds for training and fine-tuning
alike. Unannotated pixels are the loss's and the metric's business, not the loop's.

A run directory holds everything of one training run:

- ``checkpoint.pt``: model, optimizer and progress after the last finished epoch
  (tensors and plain values only, loaded with ``weights_only=True``);
- ``history.csv`` and ``learning_curve.png``: rewritten after every epoch;
- ``model/``: the bundle of the best epoch so far (by validation membrane F1); its
  metadata's ``outcome`` says which epoch that is and, once training stops, why.

Running again into the same directory resumes after the last finished epoch, so a
killed run loses at most one epoch.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from membraind_client.progress import Progress, ProgressReporter, no_progress

from membraind.atomic import atomic_path, write_text_atomic
from membraind.errors import Cancelled, InputError
from membraind.groundtruth.batches import TrainingBatches
from membraind.nn.bundle import ModelMetadata, save_bundle
from membraind.nn.device import autocast_dtype
from membraind.nn.evaluate import score, score_batch
from membraind.nn.bundle_layout import METADATA_FILE
from membraind.nn.history import EpochRecord, StopReason, TrainingOutcome, plot_learning_curve, write_csv
from membraind.nn.inference import predict_probabilities
from membraind.nn.loss import MaskUnannotated
from membraind.nn.schedule import LearningRateSchedule
from membraind.nn.settings import TrainingSettings
from membraind.nn.transfer import TransferPlan
from membraind.nn.unpainted import UnpaintedLearning
from membraind.segment.metrics import ConfusionCounts

Validation = list[tuple[np.ndarray, np.ndarray]]  # (normalised image, label classes) per image


class TrainingCancelled(Cancelled):
    """Raised when a cancel request stopped training: the bundle keeps the best finished epoch,
    the checkpoint the last one (where running again resumes)."""


def _save_atomic(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class Trainer:
    """Trains ``model`` into ``run_dir`` (see the module docstring for its layout).

    ``bundle`` is the metadata of the bundles it writes, less what training adds (time
    written, history, outcome); ``plan`` names the modules a transfer mode freezes;
    ``unpainted`` (when given) adds the unpainted-pixel term to every step's loss.
    """

    def __init__(
        self,
        run_dir: Path,
        model: nn.Module,
        loss: MaskUnannotated,
        optimizer: torch.optim.Optimizer,
        schedule: LearningRateSchedule,
        batches: TrainingBatches,
        validation: Validation,
        bundle: ModelMetadata,
        settings: TrainingSettings,
        device: torch.device,
        plan: TransferPlan | None = None,
        unpainted: UnpaintedLearning | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.schedule = schedule
        self.batches = batches
        self.validation = validation
        self.bundle = bundle
        self.settings = settings
        self.device = device
        self.plan = plan or TransferPlan()
        self.unpainted = unpainted

    # -- the loop ----------------------------------------------------------------------
    def run(self, progress: ProgressReporter | None = None, cancel: Callable[[], bool] | None = None) -> Path:
        """Train (or resume) until the epochs or the time budget are spent; returns the bundle path.

        When it stops, the bundle's metadata (:attr:`ModelMetadata.outcome`) and the
        learning curve say why and which epoch the bundle holds. A cancel raises
        :class:`TrainingCancelled` saying so; Ctrl-C (KeyboardInterrupt) is recorded the same way.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        progress = progress or no_progress
        cancel = cancel or (lambda: False)
        t, model, optimizer = self.settings, self.model, self.optimizer
        amp_dtype = autocast_dtype(self.device) if t.amp else None
        use_amp = amp_dtype is not None
        scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        memory_format = torch.channels_last if t.channels_last else torch.contiguous_format

        state = self._resume()
        if state["epoch"]:
            progress(Progress(phase="resuming", fraction=state["epoch"] / t.epochs, milestone=True,
                              message=f"resuming after epoch {state['epoch']} (checkpoint in {self.run_dir})"))  # fmt: skip
        history: list[EpochRecord] = [EpochRecord.model_validate(r) for r in state["history"]]
        total_steps = t.epochs * t.steps_per_epoch
        budget = t.max_minutes * 60 if t.max_minutes else None
        elapsed = state["elapsed"]
        cut_short = False  # the budget ended an epoch before its last step

        def spent() -> bool:
            return budget is not None and elapsed >= budget

        try:
            for epoch in range(state["epoch"], t.epochs):
                if spent():  # a resumed run whose budget is gone trains no more
                    break
                started = time.monotonic()
                model.train()
                self.plan.keep_frozen()
                counts, loss_sum, steps = ConfusionCounts(), 0.0, 0
                batches = self.batches.epoch(epoch, t.steps_per_epoch)
                views = np.random.default_rng([t.seed, epoch, 2])  # the student's strong views, as reproducible

                def done(steps_done: int) -> float:
                    """Share of the training done: by steps, or by time when a budget is set."""
                    share = (elapsed + time.monotonic() - started) / budget if budget else 0.0
                    return min(1.0, max(steps_done / total_steps, share))

                try:
                    for step in range(t.steps_per_epoch):
                        if cancel():
                            raise TrainingCancelled(f"training cancelled in epoch {epoch + 1}")
                        self.schedule.set_progress(done(epoch * t.steps_per_epoch + step))
                        images, labels = batches.next()
                        x = weak = torch.from_numpy(images)[:, None].to(self.device, memory_format=memory_format)
                        if self.unpainted is not None:  # the student sees its strong view, the teacher the patch
                            strong = self.unpainted.student_view(images, views)
                            x = torch.from_numpy(strong)[:, None].to(self.device, memory_format=memory_format)
                        y = torch.from_numpy(labels).to(self.device)
                        with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
                            logits = model(x)
                            loss = self.loss(logits.float(), y)
                            if self.unpainted is not None:
                                loss = loss + self.unpainted.loss(logits, weak, y)
                        optimizer.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        scaler.step(optimizer)
                        scaler.update()
                        if self.unpainted is not None:
                            self.unpainted.update(model)
                        loss_sum += float(loss.detach())
                        steps += 1
                        counts += score_batch(logits, labels)
                        progress(Progress(
                            phase="training", fraction=done(epoch * t.steps_per_epoch + step + 1),
                            current=epoch * t.steps_per_epoch + step + 1, total=total_steps, unit="step",
                            message=f"epoch {epoch + 1}/{t.epochs} step {step + 1}/{t.steps_per_epoch} loss {loss_sum / steps:.4f}",
                        ))  # fmt: skip
                        if budget and elapsed + time.monotonic() - started >= budget:
                            cut_short = step + 1 < t.steps_per_epoch
                            break
                finally:
                    batches.close()
                val_loss, val_counts = self._validate()
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
                outcome = self._finish_epoch(history, elapsed)
                progress(Progress(
                    phase="validating", fraction=done((epoch + 1) * t.steps_per_epoch), milestone=True,
                    current=(epoch + 1) * t.steps_per_epoch, total=total_steps, unit="step",
                    message=f"epoch {epoch + 1}/{t.epochs}: validation membrane F1 {record.val_membrane_f1:.4f}"
                            f" (kept: epoch {outcome.kept_epoch})",
                ))  # fmt: skip
        except (TrainingCancelled, KeyboardInterrupt) as exc:
            outcome = self._record_stop(history, StopReason.CANCELLED)
            if isinstance(exc, KeyboardInterrupt):
                raise
            where = str(exc)
            if outcome is None:
                raise TrainingCancelled(f"{where}, before any epoch finished: no model yet") from None
            raise TrainingCancelled(
                f"{where}; {outcome.kept} in {self.run_dir / 'model'}; resuming continues after epoch {outcome.last_epoch}"
            ) from None
        finished = bool(history) and history[-1].epoch >= t.epochs and not cut_short
        self._record_stop(history, StopReason.ALL_EPOCHS if finished or not spent() else StopReason.TIME_BUDGET)
        return self.run_dir / "model"

    @torch.no_grad()
    def _validate(self) -> tuple[float, ConfusionCounts]:
        """Validation loss (see :meth:`MaskUnannotated.validation_loss`) and counts."""
        counts, losses = ConfusionCounts(), []
        for image, labels in self.validation:
            probabilities = predict_probabilities(self.model, image, self.bundle.architecture.multiple, self.device)
            losses.append(self.loss.validation_loss(probabilities, labels))
            counts += score(probabilities, labels)
        return (float(np.mean(losses)) if losses else float("nan")), counts

    # -- persistence ---------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _resume(self) -> dict:
        """Load the checkpoint into the model and optimizer; the progress it records."""
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
        if saved.get("architecture") != self.bundle.architecture.model_dump_json():
            raise InputError(
                f"{self.run_dir} holds a run of another network architecture; choose another output folder or "
                "delete its checkpoint.pt to start over"
            )
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.unpainted is not None and "teacher" in saved:
            self.unpainted.load_state_dict(saved["teacher"])
        return {"epoch": saved["epoch"], "history": saved["history"], "elapsed": saved["elapsed"]}

    def _outcome(self, history: list[EpochRecord], stopped: StopReason | None = None) -> TrainingOutcome:
        return TrainingOutcome.of(history, self.settings.epochs, self.settings.max_minutes, stopped)

    def _finish_epoch(self, history: list[EpochRecord], elapsed: float) -> TrainingOutcome:
        """Write the bundle (when this epoch is the best so far), history, curve and checkpoint."""
        outcome = self._outcome(history)
        if outcome.kept_epoch == history[-1].epoch:
            save_bundle(self.run_dir / "model", self.model, self._metadata(history, outcome))
        else:  # keep the best weights; only the recorded history and outcome change
            self._update_bundle(history, outcome)
        write_csv(history, self.run_dir / "history.csv")
        plot_learning_curve(history, outcome, self.run_dir / "learning_curve.png")
        _save_atomic(
            {
                "epoch": history[-1].epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "history": [r.model_dump() for r in history],
                "elapsed": elapsed,
                "architecture": self.bundle.architecture.model_dump_json(),
                **({"teacher": self.unpainted.state_dict()} if self.unpainted is not None else {}),
            },
            self._checkpoint_path(),
        )
        return outcome

    def _record_stop(self, history: list[EpochRecord], stopped: StopReason) -> TrainingOutcome | None:
        """Say in the bundle and on the learning curve why training stopped (None: no epoch finished)."""
        if not history:
            return None
        outcome = self._outcome(history, stopped)
        self._update_bundle(history, outcome)
        plot_learning_curve(history, outcome, self.run_dir / "learning_curve.png")
        return outcome

    def _update_bundle(self, history: list[EpochRecord], outcome: TrainingOutcome) -> None:
        """Rewrite the bundle's model.json with ``history`` and ``outcome``, its weights untouched."""
        bundle_json = self.run_dir / "model" / METADATA_FILE
        if bundle_json.exists():
            metadata = ModelMetadata.model_validate_json(bundle_json.read_text())
            metadata = metadata.model_copy(update={"history": [r.model_dump() for r in history], "outcome": outcome})
            write_text_atomic(bundle_json, metadata.model_dump_json(indent=2))

    def _metadata(self, history: list[EpochRecord], outcome: TrainingOutcome) -> ModelMetadata:
        """The bundle's metadata with what this run adds: time written, history, outcome."""
        return self.bundle.model_copy(
            update={
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "history": [r.model_dump() for r in history],
                "outcome": outcome,
            }
        )
