"""Per-epoch training records, how a run ended, and the CSV and learning-curve PNG drawn from them."""

from __future__ import annotations

import csv
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from membraind.atomic import atomic_path
from membraind.strict import StrictModel

if TYPE_CHECKING:  # matplotlib is imported only when a curve is drawn
    from matplotlib.figure import Figure

__all__ = ["EpochRecord", "StopReason", "TrainingOutcome", "write_csv", "learning_curve_figure", "plot_learning_curve"]

METRICS = ("loss", "accuracy", "membrane_f1")


class EpochRecord(BaseModel):
    """What one epoch achieved, on training patches and on the validation images."""

    epoch: int
    seconds: float
    learning_rate: float
    train_loss: float
    train_accuracy: float
    train_membrane_f1: float
    val_loss: float
    val_accuracy: float
    val_membrane_f1: float


class StopReason(str, Enum):
    """Why a training run stopped."""

    ALL_EPOCHS = "all-epochs"  # every epoch asked for was trained
    TIME_BUDGET = "time-budget"  # max_minutes of training time were spent
    CANCELLED = "cancelled"  # a cancel request or Ctrl-C; running again resumes


def format_minutes(minutes: float) -> str:
    """A time budget as a person reads it: ``10 min``, ``1.5 min``, ``30 s``."""
    return f"{minutes:g} min" if minutes >= 1 else f"{minutes * 60:.3g} s"


class TrainingOutcome(StrictModel):
    """Which epoch a run's bundle holds and, once the run has stopped, why it stopped.

    The bundle keeps the epoch with the best validation membrane F1 (the earliest of
    equals), which is often not the last one trained.
    """

    kept_epoch: int = Field(ge=1, description="the epoch whose weights the bundle holds (best validation membrane F1)")
    kept_val_membrane_f1: float = Field(description="the validation membrane F1 of the kept epoch")
    last_epoch: int = Field(ge=1, description="the last epoch that finished")
    epochs: int = Field(ge=1, description="the epochs asked for")
    max_minutes: float | None = Field(None, description="the time budget, if one was set")
    stopped: StopReason | None = Field(None, description="why training stopped; none while it runs (or after a kill)")

    @classmethod
    def of(cls, records: list[EpochRecord], epochs: int, max_minutes: float | None,
           stopped: StopReason | None = None) -> "TrainingOutcome":  # fmt: skip
        """The outcome of a run whose finished epochs are ``records`` (at least one)."""
        kept = max(records, key=lambda r: r.val_membrane_f1)  # max keeps the first of equals
        return cls(kept_epoch=kept.epoch, kept_val_membrane_f1=kept.val_membrane_f1, last_epoch=records[-1].epoch,
                   epochs=epochs, max_minutes=max_minutes, stopped=stopped)  # fmt: skip

    @property
    def why(self) -> str:
        """Why training stopped, in a few words (``time budget of 10 min reached``)."""
        if self.stopped is StopReason.ALL_EPOCHS:
            return f"all {self.epochs} epochs done" if self.epochs != 1 else "its one epoch done"
        if self.stopped is StopReason.TIME_BUDGET:
            return f"time budget of {format_minutes(self.max_minutes or 0)} reached"
        if self.stopped is StopReason.CANCELLED:
            return "cancelled"
        return "still training (or killed)"

    @property
    def kept(self) -> str:
        """Which epoch the bundle holds and why (``kept epoch 3 (best validation membrane F1 0.8123)``)."""
        return f"kept epoch {self.kept_epoch} (best validation membrane F1 {self.kept_val_membrane_f1:.4f})"

    def describe(self) -> str:
        """One sentence for a person: why training stopped, after which epoch, and which epoch was kept."""
        if self.stopped is StopReason.ALL_EPOCHS:
            return f"finished: {self.why}; {self.kept}"
        if self.stopped is None:
            return f"trained {self.last_epoch} of {self.epochs} epochs so far; {self.kept}"
        return f"stopped: {self.why} after epoch {self.last_epoch} of {self.epochs}; {self.kept}"


def write_csv(records: list[EpochRecord], path: Path) -> None:
    """Write all records to ``path`` atomically."""
    fields = list(EpochRecord.model_fields)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for record in records:
            writer.writerow(record.model_dump())


KEPT_COLOUR, STOP_COLOUR = "tab:green", "tab:red"


def learning_curve_figure(records: list[EpochRecord], outcome: TrainingOutcome) -> "Figure":
    """Loss, accuracy and membrane F1 per epoch (training and validation), the kept epoch
    marked in every panel, and where and why training stopped when it stopped early."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r.epoch for r in records]
    stopped_early = outcome.stopped in (StopReason.TIME_BUDGET, StopReason.CANCELLED)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.6), dpi=100)
    for ax, metric in zip(axes, METRICS):
        ax.plot(epochs, [getattr(r, f"train_{metric}") for r in records], "o-", ms=3, label="training")
        ax.plot(epochs, [getattr(r, f"val_{metric}") for r in records], "s-", ms=3, label="validation")
        ax.axvline(outcome.kept_epoch, color=KEPT_COLOUR, lw=1.5,
                   label=f"kept: epoch {outcome.kept_epoch} (best validation membrane F1)")  # fmt: skip
        if stopped_early:  # between the last epoch and the next, never on top of the kept epoch's line
            ax.axvline(outcome.last_epoch + 0.5, color=STOP_COLOUR, ls="--", lw=1.2,
                       label=f"stopped after epoch {outcome.last_epoch}: {outcome.why}")  # fmt: skip
        kept = records[epochs.index(outcome.kept_epoch)]
        ax.scatter([kept.epoch], [getattr(kept, f"val_{metric}")], s=80, facecolors="none", edgecolors=KEPT_COLOUR,
                   linewidths=1.5, zorder=3)  # fmt: skip
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + (0.8 if stopped_early else 0.5))  # marks clear of the frame
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9)
    fig.suptitle(outcome.describe(), fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_learning_curve(records: list[EpochRecord], outcome: TrainingOutcome, path: Path) -> None:
    """Draw :func:`learning_curve_figure` to the PNG ``path`` atomically."""
    fig = learning_curve_figure(records, outcome)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
