"""Prediction settings (the ``[predict]`` section of the configuration)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from membraind.strict import StrictModel, accept_older_name

__all__ = ["PredictSettings", "OutputKind"]

OutputKind = Literal["membrane", "classes", "rgb"]


class PredictSettings(StrictModel):
    """How prediction runs: runtime, tiling, overlap of I/O and compute, and what it writes."""

    runtime: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="inference runtime; 'auto' picks the fastest for the device (see docs/benchmarks.md; "
        "older name: engine)",
    )
    device: str = Field("auto", description="'auto' (GPU when there is one), 'cpu', 'cuda', 'cuda:1', ...")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="arithmetic of the PyTorch runtime; 'auto': bf16/fp16 on GPU, bf16 on CPUs with native bf16, else fp32",
    )
    tile_size: int = Field(1024, ge=64, description="side of the output tiles (the tile store's PNG tiles)")
    context: int = Field(
        96, ge=0, description="pixels of context read around each tile so tiled prediction equals whole-section prediction"
    )
    batch_size: int = Field(0, ge=0, description="tiles per network call; 0: 1 on CPU, 4 on GPU")
    prefetch: int = Field(3, ge=1, description="tiles read ahead and waiting to be written (bounds memory)")
    outputs: list[OutputKind] = Field(
        default_factory=lambda: ["membrane"],
        description="what to write: 'membrane' probability (8-bit, membrane high), 'classes' map, 'rgb' (3-class nets)",
    )
    overwrite: bool = Field(False, description="recompute tiles whose outputs are newer than their inputs")
    pyramid: bool = Field(True, description="write mip levels above the prediction mip so VAST shows zoomed-out views")

    @model_validator(mode="before")
    @classmethod
    def _older_name(cls, data: Any) -> Any:
        return accept_older_name(data, "runtime", "engine")  # 'engine' until the torch/ONNX part became the runtime

    @model_validator(mode="after")
    def _aligned(self) -> "PredictSettings":
        if self.tile_size % 64:
            raise ValueError(f"tile_size ({self.tile_size}) must be a multiple of 64")
        if self.context % 32:
            raise ValueError(f"context ({self.context}) must be a multiple of 32 (networks up to depth 6)")
        if not self.outputs:
            raise ValueError("outputs is empty; name at least one of 'membrane', 'classes', 'rgb'")
        return self
