"""The one box type: a half-open region of a volume at a given mip level.

Boxes are half-open (``x0 <= x < x1``) and carry the mip level their xy coordinates are
in (docs/design-notes.md, "One box type, converted at the VAST boundary"). Mip ``m``
halves x and y ``m`` times; z is never scaled. VAST's inclusive mip0 boxes are converted
at the VAST boundary only. An :class:`Anchor` is a point a box is placed around (a
skeleton node), so predict and vast share it from here.
"""

from __future__ import annotations

import math

from pydantic import ConfigDict, Field, model_validator

from membraind.strict import StrictModel

__all__ = ["Box", "Anchor", "size_at_mip"]


def size_at_mip(size: int, mip: int) -> int:
    """Pixels along x or y at ``mip`` of an axis that has ``size`` pixels at mip 0."""
    return -(-size // 2**mip)  # ceil: a partial pixel at the edge still exists


class Box(StrictModel):
    """A half-open box ``[x0, x1) x [y0, y1) x [z0, z1)`` in mip-``mip`` pixels."""

    model_config = ConfigDict(frozen=True)

    x0: int
    x1: int
    y0: int
    y1: int
    z0: int
    z1: int
    mip: int = Field(0, ge=0, le=16)

    @model_validator(mode="after")
    def _ordered(self) -> "Box":
        for axis in "xyz":
            lo, hi = getattr(self, f"{axis}0"), getattr(self, f"{axis}1")
            if hi < lo:
                raise ValueError(f"{axis}1 ({hi}) is below {axis}0 ({lo}); boxes are half-open [{axis}0, {axis}1)")
        return self

    @classmethod
    def from_shape(cls, shape: tuple[int, int, int], mip: int = 0) -> "Box":
        """The box covering a whole ``(z, y, x)`` array."""
        z, y, x = shape
        return cls(x0=0, x1=x, y0=0, y1=y, z0=0, z1=z, mip=mip)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` extent, the shape of the array a read returns."""
        return (self.z1 - self.z0, self.y1 - self.y0, self.x1 - self.x0)

    @property
    def empty(self) -> bool:
        """True when the box holds no voxel."""
        return min(self.shape) <= 0

    @property
    def voxels(self) -> int:
        """Number of voxels inside."""
        z, y, x = self.shape
        return max(z, 0) * max(y, 0) * max(x, 0)

    def at_mip(self, mip: int) -> "Box":
        """The smallest box at ``mip`` covering this one (xy scaled, z unchanged)."""
        if mip == self.mip:
            return self
        scale = 2.0 ** (self.mip - mip)
        return Box(
            x0=math.floor(self.x0 * scale), x1=math.ceil(self.x1 * scale),
            y0=math.floor(self.y0 * scale), y1=math.ceil(self.y1 * scale),
            z0=self.z0, z1=self.z1, mip=mip,
        )  # fmt: skip

    def intersect(self, other: "Box") -> "Box":
        """The overlap of two boxes (converted to this box's mip); may be empty."""
        other = other.at_mip(self.mip)
        x0, y0, z0 = max(self.x0, other.x0), max(self.y0, other.y0), max(self.z0, other.z0)
        return Box(
            x0=x0, x1=max(x0, min(self.x1, other.x1)),
            y0=y0, y1=max(y0, min(self.y1, other.y1)),
            z0=z0, z1=max(z0, min(self.z1, other.z1)), mip=self.mip,
        )  # fmt: skip

    def contains(self, other: "Box") -> bool:
        """True when ``other`` lies wholly inside this box."""
        return self.intersect(other) == other.at_mip(self.mip)

    def grow(self, xy: int, z: int = 0) -> "Box":
        """The box enlarged by ``xy`` pixels on each side in x and y and ``z`` in z."""
        return Box(
            x0=self.x0 - xy, x1=self.x1 + xy, y0=self.y0 - xy, y1=self.y1 + xy,
            z0=self.z0 - z, z1=self.z1 + z, mip=self.mip,
        )  # fmt: skip

    def section(self, z: int) -> "Box":
        """The part of this box in section ``z`` (one section deep, same x/y extent)."""
        return Box(x0=self.x0, x1=self.x1, y0=self.y0, y1=self.y1, z0=z, z1=z + 1, mip=self.mip)

    def slices(self, origin: "Box | None" = None) -> tuple[slice, slice, slice]:
        """Index ``(z, y, x)`` slices of this box within an array read for ``origin``."""
        o = origin.at_mip(self.mip) if origin is not None else Box(x0=0, x1=0, y0=0, y1=0, z0=0, z1=0, mip=self.mip)
        return (
            slice(self.z0 - o.z0, self.z1 - o.z0),
            slice(self.y0 - o.y0, self.y1 - o.y0),
            slice(self.x0 - o.x0, self.x1 - o.x0),
        )

    def __str__(self) -> str:
        return f"x {self.x0}-{self.x1}, y {self.y0}-{self.y1}, z {self.z0}-{self.z1} at mip {self.mip}"


class Anchor(StrictModel):
    """A point in mip-0 voxel coordinates (e.g. a skeleton node) that a prediction cube is centred on."""

    x: int
    y: int
    z: int
