"""The network settings: architecture (``[unet]``), training (``[training]``) and fine-tuning (``[transfer]``).

Torch-free, so the configuration loads fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from membraind.strict import StrictModel

__all__ = ["UNetConfig", "TrainingSettings", "TransferSettings", "TransferMode", "UnpaintedSettings", "StartFrom"]

TransferMode = Literal["continue", "freeze-all-but-last", "freeze-encoder", "leaky", "episodic"]
#: Where a new network's weights come from: the starter model shipped with membraind, or random.
StartFrom = Literal["starter", "scratch"]


class UNetConfig(StrictModel):
    """How a U-Net is built; stored in every model bundle."""

    model_config = ConfigDict(frozen=True)

    depth: int = Field(4, ge=1, le=6, description="number of 2x down-samplings")
    base_filters: int = Field(16, ge=1, description="filters of the first stage, doubling per stage")
    norm: Literal["batch", "group", "none"] = Field("batch", description="normalisation after each convolution")
    dropout: float = Field(0.0, ge=0.0, le=0.9, description="dropout in the deepest stages")
    classes: int = Field(2, ge=2, le=3, description="2 (interior, membrane) or 3 (interior, membrane, third)")
    in_channels: int = Field(1, ge=1, description="input channels (EM is one gray channel)")

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this (2 ** depth)."""
        return 2**self.depth


class UnpaintedSettings(StrictModel):
    """Learning from the pixels nobody painted (:mod:`membraind.nn.unpainted`): a teacher's
    confident predictions on them are the student's targets, the painted pixels the truth."""

    mode: Literal["off", "on", "auto"] = Field(
        "auto", description="off | on | auto: on when less than auto_below of the training images is painted"
    )
    auto_below: float = Field(0.5, gt=0, le=1, description="auto: the painted share below which it is on")
    weight: float = Field(1.0, ge=0, description="weight of the unpainted-pixel term beside the painted pixels' loss")
    confidence: float = Field(
        0.9, ge=0.5, lt=1, description="a teacher's prediction becomes a target where its probability reaches this"
    )
    teacher_decay: float = Field(
        0.99, ge=0, lt=1, description="the teacher is this moving average of the student's weights (0: the student)"
    )
    strong_noise: float = Field(0.06, ge=0, le=0.5, description="the student's view: Gaussian noise sigma (0-1 range)")
    strong_gamma: float = Field(1.5, ge=1, le=4, description="the student's view: random gamma in [1/this, this]")
    strong_contrast: float = Field(0.3, ge=0, le=1, description="the student's view: contrast scaled by 1 +- this")


class TrainingSettings(StrictModel):
    """How a network is trained."""

    epochs: int = Field(40, ge=1, description="number of epochs")
    steps_per_epoch: int = Field(50, ge=1, description="optimizer steps (batches) per epoch")
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-3, gt=0, description="peak learning rate of AdamW")
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: short warm-up, then cosine decay over the epochs (or the time budget)"
    )
    class_weights: list[float] | None = Field(None, description="loss weight per class (interior, membrane[, third])")
    dice_weight: float = Field(
        1.0, ge=0, description="weight of the membrane soft-Dice term added to cross-entropy (0: cross-entropy only)"
    )
    max_minutes: float | None = Field(None, gt=0, description="stop after this much training time")
    validation_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of images (or of the one image's rows) held out when no validation set is given"
    )
    amp: bool = Field(
        True, description="mixed precision where the hardware is faster for it: GPUs, and CPUs with native bf16 (AVX512-BF16/AMX)"
    )
    channels_last: bool = Field(True, description="channels-last memory layout (faster convolutions on CPU and GPU)")
    device: str = Field("auto", description="'auto' (GPU when there is one), 'cpu', 'cuda', 'cuda:1', ...")
    seed: int = Field(0, description="the same seed trains the same network (on the same device)")
    unpainted: UnpaintedSettings = UnpaintedSettings()


class TransferSettings(StrictModel):
    """Fine-tuning a parent bundle: which parts learn, and how."""

    mode: TransferMode = Field("continue", description="continue | freeze-all-but-last | freeze-encoder | leaky | episodic")
    learning_rate: float | None = Field(
        None, gt=0, description="peak learning rate of fine-tuning (none: training.learning_rate)"
    )
    leaky_factor: float = Field(0.1, gt=0, le=1, description="leaky: encoder learning rate = this x the rate")
    episodic_ratio: float = Field(
        0.25, gt=0, lt=1, description="episodic: share of each batch drawn from the parent's training data"
    )
