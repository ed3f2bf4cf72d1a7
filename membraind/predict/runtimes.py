"""Inference runtimes: a batch of normalised tiles in, class probabilities out.

Two runtimes share one contract, ``runtime(batch (N, 1, H, W) float32) -> (N, C, H, W)
float32`` probabilities: PyTorch (CPU or GPU, with autocast where the hardware has
fast 16-bit arithmetic, channels-last) and ONNX Runtime on a bundle's exported model.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from membraind.errors import ConfigError
from membraind.nn.bundle import Bundle
from membraind.nn.device import autocast_dtype, resolve_device
from membraind.predict.settings import PredictSettings

__all__ = ["Runtime", "TorchRuntime", "OnnxRuntime", "load_runtime", "choose_runtime"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Runtime(Protocol):
    """What the prediction pipeline needs from a runtime."""

    name: str
    device: torch.device
    multiple: int  # input sides must be multiples of this
    classes: int

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchRuntime:
    """PyTorch inference of a bundle's U-Net, in eval mode, without gradients."""

    def __init__(self, bundle: Bundle, device: torch.device, precision: str = "auto", channels_last: bool = True):
        if bundle.model is None:
            raise ConfigError(f"bundle {bundle.path} holds only an ONNX network; use runtime 'onnx'")
        self.name = "torch"
        self.device = device
        self.multiple = bundle.metadata.architecture.multiple
        self.classes = bundle.metadata.architecture.classes
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = bundle.model.to(device).to(memory_format=self.memory_format).eval()
        self.dtype = autocast_dtype(device) if precision == "auto" else _DTYPES.get(precision)
        if self.dtype is not None:
            self.name += f"-{precision if precision != 'auto' else str(self.dtype).removeprefix('torch.')}"

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


class OnnxRuntime:
    """ONNX Runtime inference of a bundle's exported (or imported) ONNX network."""

    def __init__(self, bundle: Bundle, device: torch.device) -> None:
        from membraind.nn.onnx_io import OnnxPredictor, export_onnx

        path = bundle.onnx_path or (bundle.path / "model.onnx")
        if not path.exists():
            path = export_onnx(bundle, path)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" else None
        self.predictor = OnnxPredictor(path, providers)
        self.name = "onnx"
        self.device = device
        self.multiple = bundle.metadata.architecture.multiple
        self.classes = bundle.metadata.architecture.classes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predictor.predict(batch)


def choose_runtime(settings: PredictSettings, device: torch.device, bundle: Bundle) -> str:
    """The runtime 'auto' stands for: PyTorch on GPUs and on CPUs with native bf16, else ONNX Runtime.

    From ``benchmarks/predict_throughput.py`` (docs/benchmarks.md): where bf16 is native,
    PyTorch with bf16 autocast is the fastest; in fp32, ONNX Runtime beats PyTorch eager.
    """
    if settings.runtime != "auto":
        return settings.runtime
    if bundle.model is None:
        return "onnx"
    if device.type == "cuda" or autocast_dtype(device) is not None and settings.precision in ("auto", "bf16"):
        return "torch"
    return "onnx"


def load_runtime(bundle: Bundle, settings: PredictSettings) -> Runtime:
    """The runtime ``settings`` ask for, loaded with ``bundle``'s network."""
    device = resolve_device(settings.device)
    kind = choose_runtime(settings, device, bundle)
    if kind == "onnx":
        return OnnxRuntime(bundle, device)
    return TorchRuntime(bundle, device, settings.precision)
