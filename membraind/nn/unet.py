"""The 2D U-Net that segments membranes.

A standard U-Net (Ronneberger et al. 2015) with 'same' padding, so the output has the
input's size: ``depth`` stages of two 3x3 convolutions each followed by a 2x2 max-pool,
a bottleneck, and a mirrored up path of transposed convolutions whose outputs are
concatenated with the encoder's feature maps. Output channel ``k`` holds the logit of
label class ``k + 1`` (channel 0 interior, channel 1 membrane, channel 2 third class).

Its settings, :class:`~membraind.nn.settings.UNetConfig`, live in :mod:`membraind.nn.settings`
(torch-free, so configuration loads without importing torch).
"""

from __future__ import annotations

import torch
from torch import nn

from membraind.nn.settings import UNetConfig

__all__ = ["UNet", "count_parameters"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # GroupNorm needs a group count that divides the channels; odd base_filters
        # (e.g. 12 -> 24 channels) rule out a plain min(8, channels).
        groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    """Two (3x3 conv, norm, ReLU) layers, optionally followed by dropout."""

    def __init__(self, in_channels: int, out_channels: int, norm: str, dropout: float = 0.0) -> None:
        bias = norm == "none"  # a following norm layer would cancel the bias anyway
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            layers += [
                nn.Conv2d(channels_in, out_channels, kernel_size=3, padding=1, bias=bias),
                _norm(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class _Up(nn.Module):
    """Double the resolution, halve the channels, join the skip connection, convolve."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _DoubleConv(2 * out_channels, out_channels, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """2D U-Net: ``(N, in_channels, H, W)`` float32 -> logits ``(N, classes, H, W)``.

    ``H`` and ``W`` must be multiples of ``2 ** depth`` (``config.multiple``).
    Attributes used by transfer learning: ``encoder`` (down path and bottleneck),
    ``decoder`` (up path) and ``head`` (the final 1x1 convolution).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_filters * 2**i for i in range(config.depth + 1)]
        deepest = config.depth  # index of the bottleneck
        self.encoder = nn.ModuleList(
            _DoubleConv(
                config.in_channels if i == 0 else widths[i - 1],
                widths[i],
                config.norm,
                # Dropout where the features are most abstract and overfitting most likely.
                config.dropout if i >= deepest - 1 else 0.0,
            )
            for i in range(deepest + 1)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(_Up(widths[i + 1], widths[i], config.norm) for i in reversed(range(deepest)))
        self.head = nn.Conv2d(widths[0], config.classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for ``x``; raises ValueError when H or W is not a multiple of 2**depth."""
        # While tracing for ONNX export the shapes are symbolic: the check would be
        # frozen into the graph for the example input only.
        if not torch.jit.is_tracing():
            height, width = x.shape[-2:]
            multiple = self.config.multiple
            if height % multiple or width % multiple:
                raise ValueError(
                    f"input of size {height}x{width} is not a multiple of {multiple} (2^depth for a U-Net of "
                    f"depth {self.config.depth}); pad or crop it to a multiple of {multiple}"
                )
        skips = []
        for stage in self.encoder[:-1]:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.encoder[-1](x)
        for up, skip in zip(self.decoder, reversed(skips)):
            x = up(x, skip)
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (frozen ones included)."""
    return sum(p.numel() for p in model.parameters())
