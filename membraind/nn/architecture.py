"""The U-Net's architecture settings (torch-free, so configuration loads fast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UNetConfig(BaseModel):
    """How a U-Net is built; stored in every model bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
