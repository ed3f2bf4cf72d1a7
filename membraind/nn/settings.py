"""The network settings: architecture (``[unet]``), training (``[training]``) and fine-tuning (``[transfer]``).

Torch-free, so the configuration loads fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from membraind.strict import StrictModel

__all__ = ["UNetConfig", "TrainingSettings", "TransferSettings", "TransferMode"]

TransferMode = Literal["continue", "freeze-all-but-last", "freeze-encoder", "leaky", "episodic"]


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


class TransferSettings(StrictModel):
    """Fine-tuning a parent bundle: which parts learn, and how."""

    mode: TransferMode = Field("continue", description="continue | freeze-all-but-last | freeze-encoder | leaky | episodic")
    leaky_factor: float = Field(0.1, gt=0, le=1, description="leaky: encoder learning rate = this x the rate")
    episodic_ratio: float = Field(
        0.25, gt=0, lt=1, description="episodic: share of each batch drawn from the parent's training data"
    )
