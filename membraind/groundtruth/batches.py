"""Training batches: patches of the ground truth, optionally mixed with replayed patches.

Each epoch reseeds the samplers from ``(seed, epoch)``, so a resumed run draws the
patches an uninterrupted one would have drawn, and draws its batches ahead in a
background thread (:class:`~membraind.groundtruth.prefetch.Prefetch`).
"""

from __future__ import annotations

import numpy as np

from membraind.groundtruth.prefetch import Prefetch
from membraind.groundtruth.sampler import PatchSampler

Batch = tuple[np.ndarray, np.ndarray]  # images (N, P, P) float32, label classes (N, P, P) uint8


class TrainingBatches:
    """Batches of ``batch_size`` patches from ``sampler``; with a ``replay`` sampler (episodic
    fine-tuning), ``replay_share`` of every batch comes from it instead."""

    def __init__(
        self,
        sampler: PatchSampler,
        batch_size: int,
        seed: int,
        replay: PatchSampler | None = None,
        replay_share: float = 0.0,
    ) -> None:
        self.sampler = sampler
        self.replay = replay
        self.batch_size = batch_size
        self.seed = seed
        self.from_replay = int(round(replay_share * batch_size)) if replay is not None else 0

    def draw(self) -> Batch:
        """One batch, the replayed patches last."""
        images, labels = self.sampler.batch(self.batch_size - self.from_replay)
        if self.from_replay:
            old_images, old_labels = self.replay.batch(self.from_replay)
            images, labels = np.concatenate([images, old_images]), np.concatenate([labels, old_labels])
        return images, labels

    def epoch(self, epoch: int, steps: int) -> Prefetch[Batch]:
        """The ``steps`` batches of epoch ``epoch`` (0-based), drawn ahead; close it when done."""
        self.sampler.reseed([self.seed, epoch])
        if self.replay is not None:
            self.replay.reseed([self.seed, epoch, 1])
        return Prefetch(self.draw, steps)
