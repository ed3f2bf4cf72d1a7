"""What a prediction is asked to do: which data, which bundles, which part, where to write.

One pydantic model serves the CLI, request files and the daemon's jobs. The
part to predict is one of four modes: the whole volume, a box, anchor points each with
a cube around it (the union of the tiles the cubes touch is predicted once), or one
image file (a tile that just arrived at the scope; the output mirrors its path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Literal, Union

from pydantic import Field, field_validator, model_validator

from membraind.errors import InputError
from membraind.nn.versions import check_model_reference, resolve_model
from membraind.strict import StrictModel
from membraind.vast.paths import PathMap
from membraind.vast.protocol import DEFAULT_PORT
from membraind.volumes.box import Anchor, Box
from membraind.volumes.voxel_size import VoxelSizeNm

__all__ = ["PredictRequest", "WholeVolume", "BoxRegion", "Anchors", "SingleImage", "Target", "VastSource"]


class WholeVolume(StrictModel):
    """Every tile of the volume."""

    mode: Literal["volume"] = "volume"


class BoxRegion(StrictModel):
    """Every tile touching a box (half-open, at the box's own mip)."""

    mode: Literal["box"] = "box"
    box: Box


class Anchors(StrictModel):
    """Cubes around anchor points: ``cube_xy`` x ``cube_xy`` mip-0 pixels, ``cube_z`` sections."""

    mode: Literal["anchors"] = "anchors"
    points: list[Anchor] = Field(min_length=1)
    cube_xy: int = Field(1024, ge=1, description="cube side in x and y, mip-0 pixels")
    cube_z: int = Field(16, ge=1, description="cube depth in sections")

    def boxes(self) -> list[Box]:
        """The mip-0 box of each anchor's cube."""
        half_xy, half_z = self.cube_xy // 2, self.cube_z // 2
        return [
            Box(
                x0=p.x - half_xy, x1=p.x - half_xy + self.cube_xy,
                y0=p.y - half_xy, y1=p.y - half_xy + self.cube_xy,
                z0=p.z - half_z, z1=p.z - half_z + self.cube_z, mip=0,
            )  # fmt: skip
            for p in self.points
        ]


class SingleImage(StrictModel):
    """One image file; the outputs mirror its path below ``root`` (default: its folder)."""

    mode: Literal["image"] = "image"
    root: Path | None = None


Target = Annotated[Union[WholeVolume, BoxRegion, Anchors, SingleImage], Field(discriminator="mode")]


class VastSource(StrictModel):
    """An EM layer of a running VAST (its remote API server) as the data to predict."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    layer: int | str = Field(0, description="EM layer: its number (0-based) or its name")
    paths: list[PathMap] = Field(
        default_factory=list,
        description="where that VAST sees the daemon's folders (default: the [[service.vast]] of this host and port)",
    )


def paths_for(source: VastSource, configured: Callable[[str, int], list[PathMap]]) -> list[PathMap]:
    """The path mapping that applies to ``source``: its own, else ``configured(host, port)``."""
    return source.paths or configured(source.host, source.port)


class PredictRequest(StrictModel):
    """A prediction: data, bundles, target and output folder."""

    volume: Path | VastSource = Field(
        description="folder of sections, multi-page TIFF, .vsvi, (mode image) one image file, or a VAST layer"
    )
    bundles: list[Path] = Field(default_factory=list, description="model bundles applied in one pass over the data")
    models: list[str] = Field(
        default_factory=list,
        description="lab models: NAME (its latest version when the job runs) or NAME@vN; applied with the bundles",
    )
    out: Path = Field(description="output folder; each bundle writes <out>/<bundle name>/<kind>/")
    target: Target = Field(default_factory=WholeVolume)
    mip: int | None = Field(None, ge=0, description="mip level to predict at (default: the first bundle's)")
    voxel_size_nm: VoxelSizeNm | None = Field(
        None, description="(x, y, z) voxel size in nm, or one number for cubic voxels; overrides the source's own"
    )

    @field_validator("volume", mode="before")
    @classmethod
    def _no_vast_address(cls, value: object) -> object:
        # As a Path, "vast://host:port/EM" would pass here and fail only when the job opens it.
        if isinstance(value, (str, Path)) and str(value).lower().startswith("vast:/"):
            raise ValueError(
                f"{str(value)!r} is a VAST address, which is not a path; name a VAST layer as a table instead: "
                'volume = {host = "HOST", port = PORT, layer = "LAYER"} (TOML) or '
                '"volume": {"host": "HOST", "port": PORT, "layer": "LAYER"} (JSON)'
            )
        return value

    @field_validator("models")
    @classmethod
    def _model_references(cls, value: list[str]) -> list[str]:
        for reference in value:
            try:
                check_model_reference(reference)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _some_model(self) -> "PredictRequest":
        if not self.bundles and not self.models:
            raise ValueError("give bundles (model bundle folders) or models (lab models by name), at least one")
        return self

    def with_models_resolved(self, models_dir: Path) -> "PredictRequest":
        """The request with its lab models as the bundles of their versions now (latest resolved)."""
        if not self.models:
            return self
        found = [resolve_model(models_dir, reference).bundle for reference in self.models]
        return self.model_copy(update={"bundles": [*self.bundles, *found], "models": []})

    def with_models_pinned(self, models_dir: Path) -> "PredictRequest":
        """The request with each lab model named by its version now (``NAME`` -> ``NAME@v3``),
        so that jobs run later, or in parts, all use that version."""
        pinned = [f"{v.model}@v{v.version}" for v in (resolve_model(models_dir, r) for r in self.models)]
        return self.model_copy(update={"models": pinned}) if self.models else self

    @model_validator(mode="after")
    def _target_fits_source(self) -> "PredictRequest":
        if isinstance(self.volume, VastSource) and isinstance(self.target, SingleImage):
            raise ValueError(
                "target.mode 'image' predicts one image file, but volume is a VAST layer; "
                "with a VAST source use target mode 'box', 'anchors' or 'volume'"
            )
        return self

    def region(self) -> Box | None:
        """The mip-0 box the target covers (None: the whole volume, or one image)."""
        if isinstance(self.target, BoxRegion):
            return self.target.box.at_mip(0)
        if isinstance(self.target, Anchors):
            boxes = self.target.boxes()
            return Box(
                x0=min(b.x0 for b in boxes), x1=max(b.x1 for b in boxes),
                y0=min(b.y0 for b in boxes), y1=max(b.y1 for b in boxes),
                z0=min(b.z0 for b in boxes), z1=max(b.z1 for b in boxes), mip=0,
            )  # fmt: skip
        return None
