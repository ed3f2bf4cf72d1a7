"""The daemon's settings (the ``[service]`` section of the configuration)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from membraind_client.messages import MAX_MESSAGE_BYTES
from pydantic import Field, field_validator, model_validator

from membraind.console.settings import WebSettings
from membraind.errors import InputError
from membraind.nn.settings import TransferMode
from membraind.nn.versions import check_model_name
from membraind.strict import StrictModel, accept_older_name
from membraind.vast.painted import PaintedClasses, VastGroundTruth
from membraind.vast.paths import PathMap
from membraind.vast.protocol import DEFAULT_PORT

__all__ = ["ServiceSettings", "ScopeWatch", "VastWatch", "ApiSettings", "QueueSettings"]


class ScopeWatch(StrictModel):
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


class VastWatch(PaintedClasses):
    """A VAST the daemon works with: skeleton nodes in its annotation layers are anchors to
    predict around, shown in VAST as layers; with ``learn``, what users paint in its
    segmentation layer becomes the next version of ``model`` (the mEMbrain loop)."""

    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    em_layer: int | str = Field(0, description="EM layer to predict (number or name)")
    anchor_layers: list[str] = Field(min_length=1, description="annotation layers whose nodes are anchors")
    model: str | None = Field(
        None, description="lab model (in the models folder) whose latest version predicts; a new version "
        "re-predicts the cubes already shown",
    )  # fmt: skip
    bundles: list[Path] = Field(default_factory=list, description="model bundles that predict (besides model)")
    out: Path = Field(description="output folder of the predicted layers")
    cube_xy: int = Field(1024, ge=1, description="cube side around each node, mip-0 pixels")
    cube_z: int = Field(16, ge=1, description="cube depth, sections")
    poll_seconds: float = Field(5.0, gt=0, description="how often the layers are checked for new nodes and painting")
    paths: list[PathMap] = Field(
        default_factory=list,
        description="where this VAST sees the daemon's folders: [{daemon = \"/data/lab\", vast = 'Z:\\lab'}]; "
        "none: VAST runs on this machine",
    )
    learn: bool = Field(False, description="learn the next version of model from what is painted in ground_truth_layer")
    ground_truth_layer: str = Field("segmentation", description="segmentation layer where ground truth is painted")
    ground_truth_mip: int = Field(0, ge=0, description="mip the painting is read and learned at")
    learn_voxels: int = Field(
        2000, ge=1, description="learn again once this many more voxels (mip 0) are painted than the latest version saw"
    )
    quiet_seconds: float = Field(30.0, ge=0, description="and nobody has painted for this long")
    learn_mode: TransferMode | None = Field(None, description="how a new version is fine-tuned (default: [transfer] mode)")
    learn_minutes: float = Field(5.0, gt=0, description="training budget of each new version, minutes")

    @model_validator(mode="after")
    def _something_predicts(self) -> "VastWatch":
        if self.model is None and not self.bundles:
            raise ValueError("give model (a lab model whose latest version predicts) or bundles")
        if self.learn and self.model is None:
            raise ValueError("learn = true needs model: the lab model whose next versions are learned")
        if self.model is not None:
            try:
                check_model_name(self.model)
            except InputError as exc:
                raise ValueError(str(exc)) from None
        return self

    def ground_truth(self) -> VastGroundTruth:
        """The painted ground truth this VAST's loop learns from."""
        return VastGroundTruth(
            host=self.host, port=self.port, em_layer=self.em_layer, segmentation_layer=self.ground_truth_layer,
            mip=self.ground_truth_mip, convention=self.convention, classes=self.classes, paths=self.paths,
        )  # fmt: skip


class ApiSettings(StrictModel):
    """The ZeroMQ API: a request endpoint (ROUTER) and an event stream (PUB). See docs/protocol.md."""

    enabled: bool = Field(True, description="serve the ZeroMQ API")
    endpoint: str = Field("tcp://127.0.0.1:5571", description="request endpoint: tcp://HOST:PORT or ipc:///path")
    events: str = Field("tcp://127.0.0.1:5572", description="event stream endpoint (PUB)")
    server_key: Path | None = Field(
        None, description="CurveZMQ: the server's .key_secret file; setting it turns authentication on"
    )
    authorized_keys: Path | None = Field(None, description="CurveZMQ: folder of the admitted clients' public .key files")
    max_message_bytes: int = Field(MAX_MESSAGE_BYTES, ge=1024, description="larger requests get an error reply")

    @field_validator("endpoint", "events")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.fullmatch(r"(tcp://[^\s]+:\d+|ipc://[^\s]+)", value):
            raise ValueError(f"{value!r} is not a ZeroMQ endpoint: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5571) "
                             "or ipc:///absolute/path.sock")  # fmt: skip
        if value.startswith("ipc://") and len(value) - len("ipc://") > 100:
            raise ValueError(f"{value!r}: ipc socket paths are limited to about 100 characters; choose a shorter path")
        return value

    @model_validator(mode="after")
    def _curve_pair(self) -> "ApiSettings":
        if (self.server_key is None) != (self.authorized_keys is None):
            raise ValueError("CurveZMQ needs both server_key (the server's .key_secret file) and authorized_keys "
                             "(a folder of client .key files); `membraind keygen` makes keys")  # fmt: skip
        return self


class QueueSettings(StrictModel):
    """Where jobs wait and are recorded: SQLite files on this host (the default), or a
    Redis server that several worker hosts share (docs/operations.md, "Scaling out")."""

    backend: Literal["sqlite", "redis"] = Field(
        "sqlite", description="sqlite: journal and queue in the state folder; redis: in the Redis server at redis_url"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="redis://[:PASSWORD@]HOST:PORT/DB (backend redis)")
    prefix: str = Field("membraind", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                        description="name of this cluster's keys in Redis (several clusters can share one server)")  # fmt: skip
    secret_file: Path | None = Field(
        None, description="file holding the secret that signs queue messages; required with backend redis, "
        "the same file on every host",
    )  # fmt: skip
    lease_seconds: float = Field(
        30.0, ge=1, le=3600, description="a worker that has not renewed its hold on a running job for this long is "
        "presumed dead and the job is taken over",
    )  # fmt: skip
    part_sections: int | None = Field(
        None, ge=0, description="a volume or box prediction spanning more sections is split into parts of this many, "
        "which several workers share (default: 8 with redis, 0 = never split, with sqlite; older name: chunk_sections)",
    )  # fmt: skip
    serve_runs_jobs: bool | None = Field(
        None, description="whether `membraind serve` runs jobs itself (default: yes with sqlite, no with redis, "
        "where `membraind worker` processes run them)",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _older_name(cls, data: Any) -> Any:
        return accept_older_name(data, "part_sections", "chunk_sections")  # before a split had one name, "parts"

    @model_validator(mode="after")
    def _redis_needs_a_secret(self) -> "QueueSettings":
        if self.backend == "redis" and self.secret_file is None:
            raise ValueError("backend redis needs secret_file: a file with a random secret, the same on every host, "
                             "e.g. made by `membraind secret /etc/membraind/queue.secret`")  # fmt: skip
        return self

    def sections_per_part(self) -> int:
        """Sections per part of a split prediction (0: predictions are not split)."""
        if self.part_sections is not None:
            return self.part_sections
        return 8 if self.backend == "redis" else 0

    def runs_jobs_in_serve(self) -> bool:
        """Whether ``membraind serve`` consumes the queues itself."""
        return self.backend == "sqlite" if self.serve_runs_jobs is None else self.serve_runs_jobs


class ServiceSettings(StrictModel):
    """Where the daemon keeps its state, what it watches, and how it runs jobs."""

    home: Path = Field(
        default_factory=lambda: Path.home() / "membraind", description="base folder: state/, requests/ and default roots"
    )
    state_dir: Path | None = Field(None, description="journal, queue, lock (default: <home>/state); local disk only")
    roots: list[Path] = Field(
        default_factory=list, description="folders requests may read and write (besides <home>); all else is refused"
    )
    request_dir: Path | None = Field(None, description="folder watched for request files (default: <home>/requests)")
    request_polling: bool = Field(False, description="poll the request folder (network shares)")
    scope: list[ScopeWatch] = Field(default_factory=list, description="microscope folders to predict as tiles arrive")
    vast: list[VastWatch] = Field(default_factory=list, description="VASTs: anchors to predict around, painting to learn from")
    rescan_seconds: float = Field(120.0, gt=0, description="full rescan of watched folders (events are only hints)")
    queue_poll_seconds: float = Field(0.1, gt=0, le=10, description="longest wait of an idle queue worker before it looks again")
    max_attempts: int = Field(3, ge=1, description="runs of a failing job (engine crash, hang) before it is failed")
    retry_delay_seconds: float = Field(10.0, ge=0, description="wait before the first retry; doubles each time")
    hang_seconds: float = Field(900.0, gt=0, description="a job with no progress this long is killed as hung")
    cancel_grace_seconds: float = Field(20.0, gt=0, description="how long a cancelled job may take to stop before it is killed")
    models_dir: Path | None = Field(None, description="folder of model bundles the API lists (default: <home>/models)")
    api: ApiSettings = Field(default_factory=ApiSettings, description="the ZeroMQ API (docs/protocol.md)")
    queue: QueueSettings = Field(default_factory=QueueSettings, description="journal and queue backend")
    web: WebSettings = Field(default_factory=WebSettings, description="the lab console, a web page (docs/user-guide.md)")

    def state_path(self) -> Path:
        """The state folder (journal, queue database, lock file)."""
        return self.state_dir or self.home / "state"

    def models_path(self) -> Path:
        """The folder of model bundles listed by the API."""
        return self.models_dir or self.home / "models"

    def requests_path(self) -> Path:
        """The request folder."""
        return self.request_dir or self.home / "requests"

    def vast_paths(self, host: str, port: int) -> list[PathMap]:
        """The path mapping of the VAST at ``host:port`` (its ``[[service.vast]]``; none: VAST is local)."""
        return next((watch.paths for watch in self.vast if (watch.host, watch.port) == (host, port)), [])

    def allowed_roots(self) -> list[Path]:
        """Every folder requests may use: ``home`` and ``roots``, resolved."""
        return [p.resolve() for p in [self.home, *self.roots]]

    @model_validator(mode="after")
    def _absolute_folders(self) -> "ServiceSettings":
        # Made absolute once, when the configuration is loaded ("~" expanded, relative paths
        # taken from the working directory, as the rest of the configuration is): the daemon,
        # its engine processes and `membraind status` then name the same folders.
        def absolute(path: Path | None) -> Path | None:
            return None if path is None else path.expanduser().absolute()

        self.home = absolute(self.home)
        self.state_dir, self.request_dir = absolute(self.state_dir), absolute(self.request_dir)
        self.models_dir = absolute(self.models_dir)
        self.queue.secret_file = absolute(self.queue.secret_file)
        self.roots = [absolute(root) for root in self.roots]
        self.web.token_file, self.web.tls_certificate = absolute(self.web.token_file), absolute(self.web.tls_certificate)
        self.web.tls_key = absolute(self.web.tls_key)
        return self
