"""The daemon's settings (the ``[service]`` section of the configuration)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from membraind.vast.protocol import DEFAULT_PORT

__all__ = ["ServiceSettings", "ScopeWatch", "VastAnchorWatch"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScopeWatch(_Strict):
    """A folder tree where a microscope writes tiles: each finished image is predicted."""

    folder: Path = Field(description="watched folder (recursive)")
    out: Path = Field(description="output folder; outputs mirror the tile's path below `folder`")
    bundles: list[Path] = Field(min_length=1, description="model bundles applied to each tile")
    patterns: list[str] = Field(
        default_factory=lambda: ["*.tif", "*.tiff", "*.png"], description="file names to predict (glob, case-insensitive)"
    )
    polling: bool = Field(False, description="poll instead of inotify: needed for network shares (NFS, SMB)")
    poll_seconds: float = Field(2.0, gt=0, description="polling interval when `polling` is on")
    stable_seconds: float = Field(1.0, ge=0, description="a tile is complete once its size and mtime held this long")


class VastAnchorWatch(_Strict):
    """A VAST whose annotation layers' skeleton nodes are anchors to predict around."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    em_layer: int | str = Field(0, description="EM layer to predict (number or name)")
    anchor_layers: list[str] = Field(min_length=1, description="annotation layers whose nodes are anchors")
    bundles: list[Path] = Field(min_length=1)
    out: Path = Field(description="output folder of the predicted layers")
    cube_xy: int = Field(1024, ge=1, description="cube side around each node, mip-0 pixels")
    cube_z: int = Field(16, ge=1, description="cube depth, sections")
    poll_seconds: float = Field(5.0, gt=0, description="how often the layers are checked for new nodes")


class ServiceSettings(_Strict):
    """Where the daemon keeps its state, what it watches, and how it runs jobs."""

    home: Path = Field(Path("membraind-home"), description="base folder: state/, requests/ and default roots")
    state_dir: Path | None = Field(None, description="journal, queue, lock (default: <home>/state); local disk only")
    roots: list[Path] = Field(
        default_factory=list, description="folders requests may read and write (besides <home>); all else is refused"
    )
    request_dir: Path | None = Field(None, description="folder watched for request files (default: <home>/requests)")
    request_polling: bool = Field(False, description="poll the request folder (network shares)")
    scope: list[ScopeWatch] = Field(default_factory=list, description="microscope folders to predict as tiles arrive")
    vast: list[VastAnchorWatch] = Field(default_factory=list, description="VAST anchor layers to predict around")
    rescan_seconds: float = Field(120.0, gt=0, description="full rescan of watched folders (events are only hints)")
    queue_poll_seconds: float = Field(0.1, gt=0, le=10, description="longest wait of an idle queue worker before it looks again")
    max_attempts: int = Field(3, ge=1, description="runs of a failing job (engine crash, hang) before it is failed")
    retry_delay_seconds: float = Field(10.0, ge=0, description="wait before the first retry; doubles each time")
    hang_seconds: float = Field(900.0, gt=0, description="a job with no progress this long is killed as hung")
    cancel_grace_seconds: float = Field(20.0, gt=0, description="how long a cancelled job may take to stop before it is killed")

    def state_path(self) -> Path:
        """The state folder (journal, queue database, lock file)."""
        return self.state_dir or self.home / "state"

    def requests_path(self) -> Path:
        """The request folder."""
        return self.request_dir or self.home / "requests"

    def allowed_roots(self) -> list[Path]:
        """Every folder requests may use: ``home`` and ``roots``, resolved."""
        return [p.resolve() for p in [self.home, *self.roots]]
