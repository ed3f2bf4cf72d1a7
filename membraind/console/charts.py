"""Learning curves as SVG, drawn on the server from a run's history (no script, no build step).

Three panels as in the run's ``learning_curve.png`` (loss, accuracy, membrane F1), training
and validation, the kept epoch marked; the console redraws them as epochs finish.
"""

from __future__ import annotations

import csv
from html import escape
from pathlib import Path
from typing import Any, Sequence

from membraind.nn.history import METRICS, EpochRecord

__all__ = ["read_history", "learning_curve_svg"]

TRAIN_COLOUR, VAL_COLOUR, KEPT_COLOUR = "#1f77b4", "#ff7f0e", "#2ca02c"
PANEL_W, PANEL_H, PAD = 240, 150, 34


def read_history(run: Path, bundle_history: Sequence[dict[str, Any]] = ()) -> list[EpochRecord]:
    """A run's epochs: its ``history.csv`` (rewritten after every epoch, so live), else the
    history its bundle records; [] when there is neither (no epoch finished yet)."""
    rows: list[dict[str, Any]] = []
    try:
        with open(Path(run) / "history.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        rows = list(bundle_history)
    records = []
    for row in rows:
        try:
            records.append(EpochRecord.model_validate(row))
        except ValueError:  # a row of another membraind version: the curve shows the rest
            continue
    return records


def _scale(values: Sequence[float], low: float, high: float) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _panel(records: list[EpochRecord], metric: str, x0: float, kept: int | None) -> list[str]:
    epochs = [r.epoch for r in records]
    train = [getattr(r, f"train_{metric}") for r in records]
    val = [getattr(r, f"val_{metric}") for r in records]
    lo, hi = _scale(train + val, 0, 1)
    e0, e1 = min(epochs) - 0.5, max(epochs) + 0.5
    w, h = PANEL_W - PAD - 8, PANEL_H - 2 * PAD + 10

    def x(epoch: float) -> float:
        return x0 + PAD + (epoch - e0) / (e1 - e0) * w

    def y(value: float) -> float:
        return PAD + (hi - value) / (hi - lo) * h

    parts = [
        f'<text x="{x0 + PANEL_W / 2:.0f}" y="16" text-anchor="middle" class="title">{escape(metric.replace("_", " "))}</text>',
        f'<rect x="{x0 + PAD:.0f}" y="{PAD}" width="{w:.0f}" height="{h:.0f}" class="frame"/>',
        f'<text x="{x0 + PAD - 4:.0f}" y="{PAD + 4}" text-anchor="end" class="tick">{hi:.3g}</text>',
        f'<text x="{x0 + PAD - 4:.0f}" y="{PAD + h:.0f}" text-anchor="end" class="tick">{lo:.3g}</text>',
        f'<text x="{x0 + PAD + w / 2:.0f}" y="{PAD + h + 24:.0f}" text-anchor="middle" class="tick">epoch '
        f"{min(epochs)}–{max(epochs)}</text>",
    ]  # fmt: skip
    if kept is not None and kept in epochs:
        parts.append(f'<line x1="{x(kept):.1f}" x2="{x(kept):.1f}" y1="{PAD}" y2="{PAD + h:.0f}" class="kept"/>')
    for values, colour, name in ((train, TRAIN_COLOUR, "training"), (val, VAL_COLOUR, "validation")):
        points = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in zip(epochs, values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2" class="{name}"/>')
        parts += [f'<circle cx="{x(e):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>' for e, v in zip(epochs, values)]
    return parts


def learning_curve_svg(records: list[EpochRecord], kept_epoch: int | None = None) -> str:
    """The learning curve of ``records`` as an inline SVG element ('' when there is no epoch yet)."""
    if not records:
        return ""
    width, height = PANEL_W * len(METRICS), PANEL_H + 30
    parts = [f'<svg class="curve" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'data-epochs="{len(records)}" role="img" aria-label="learning curve, {len(records)} epochs">']  # fmt: skip
    for index, metric in enumerate(METRICS):
        parts += _panel(records, metric, index * PANEL_W, kept_epoch)
    legend_y = height - 6
    parts += [
        f'<rect x="40" y="{legend_y - 8}" width="14" height="4" fill="{TRAIN_COLOUR}"/>'
        f'<text x="58" y="{legend_y}" class="tick">training</text>',
        f'<rect x="130" y="{legend_y - 8}" width="14" height="4" fill="{VAL_COLOUR}"/>'
        f'<text x="148" y="{legend_y}" class="tick">validation</text>',
    ]  # fmt: skip
    if kept_epoch is not None:
        parts.append(f'<rect x="230" y="{legend_y - 10}" width="3" height="10" fill="{KEPT_COLOUR}"/>'
                     f'<text x="238" y="{legend_y}" class="tick">kept epoch {kept_epoch} (best validation membrane F1)'
                     "</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
