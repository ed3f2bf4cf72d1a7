"""Choosing the compute device, and the reduced-precision dtype autocast should use on it.

Mixed precision roughly doubles convolution throughput where the hardware computes in
16-bit natively: CUDA GPUs (bf16 where supported, else fp16 with loss scaling) and
x86 CPUs with AVX512-BF16 or AMX (bf16). On other CPUs bf16 is emulated and slower
than fp32, so autocast stays off there.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from membraind.errors import InputError

__all__ = ["autocast_dtype", "cpu_has_native_bf16", "describe_device", "resolve_device"]

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 in hardware (read from /proc/cpuinfo on Linux)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    return any(flag in flags for flag in _NATIVE_BF16_FLAGS) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype worth using on ``device``, or None where fp32 is fastest."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def resolve_device(name: str) -> torch.device:
    """'auto' -> the first GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but no CUDA GPU is available; use --device cpu")
    return device


def describe_device(name: str) -> str:
    """The device ``name`` ('auto', 'cpu', 'cuda:1', ...) resolves to, for a person reading a log:
    ``cuda:0 (NVIDIA H200)``, ``cpu (no CUDA device)``, or why it is unusable. Never raises."""
    try:
        device = resolve_device(name)
        if device.type != "cuda":
            return f"{device}" if torch.cuda.is_available() else f"{device} (no CUDA device)"
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            return f"{name}, which does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    except InputError:
        return f"{name}, which is unavailable: no CUDA device (its jobs will fail; set the device to auto or cpu)"
    except Exception as exc:  # a broken driver, an unknown device type: say so, the engine starts anyway
        return f"{name}, which is unusable ({type(exc).__name__}: {exc})"
