"""Per-epoch training records: a CSV and a learning-curve PNG, rewritten every epoch."""

from __future__ import annotations

import csv
from pathlib import Path

from pydantic import BaseModel

from membraind.atomic import atomic_path

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


def write_csv(records: list[EpochRecord], path: Path) -> None:
    """Write all records to ``path`` atomically."""
    fields = list(EpochRecord.model_fields)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for record in records:
            writer.writerow(record.model_dump())


def plot_learning_curve(records: list[EpochRecord], path: Path) -> None:
    """Draw loss, accuracy and membrane F1 per epoch (training and validation) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    epochs = [r.epoch for r in records]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 3.2), dpi=100)
    for ax, metric in zip(axes, METRICS):
        ax.plot(epochs, [getattr(r, f"train_{metric}") for r in records], "o-", ms=3, label="training")
        ax.plot(epochs, [getattr(r, f"val_{metric}") for r in records], "s-", ms=3, label="validation")
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
