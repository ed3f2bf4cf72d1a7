"""The mEMbrain loop, staged: a lab's shared drive, VAST on "Windows" (the emulator in
Windows mode), ``membraind serve`` learning from what a user paints and showing its
predictions where the user placed skeleton nodes.

:class:`LoopLab` is one such set-up, with the user's actions (paint brush-stroke discs
of the true labels, place nodes) and waits for what the daemon does (a version learned,
its predictions shown). The loop's test, ``benchmarks/vast_loop.py`` and ``membraind demo``
all run it; only what they check or print differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from membraind.daemon_toml import write_daemon_toml
from membraind.demo.brush import brush_discs
from membraind.groundtruth.classes import INTERIOR, MEMBRANE
from membraind.harness import SupervisedDaemon, wait_until
from membraind.nn.versions import ModelVersion, versions
from membraind.service.watchers.vast_learning import LEARN_JOB_PREFIX
from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.vast.emulator.commands import SEGMENTATION_NAME
from membraind.vast.layouts import SkeletonNode
from membraind.vast.paths import PathMap
from membraind.vast.skeletons import AnnotationLayerData, SkeletonObject, save_skeleton_json
from membraind.volumes.box import Box
from membraind.volumes.open_volume import open_volume

__all__ = ["LoopLab", "MODEL", "WINDOWS_DRIVE"]

MODEL = "loop"  # the lab model the loop trains
WINDOWS_DRIVE = "Z:\\lab"  # where "VAST on Windows" sees the lab's shared folder
ANCHOR_LAYER = "anchors"


@dataclass
class LoopLab:
    """A lab folder ``root`` (the shared drive) with EM ``em`` and its true class labels
    ``labels`` (a (z, y, x) array of interior/membrane classes, the painter's answer key).

    ``config`` is laid over the daemon's configuration (e.g. a smaller network).
    """

    root: Path
    em: Path
    labels: np.ndarray
    config: dict | None = None
    quiet_seconds: float = 2.0
    learn_voxels: int = 5000
    learn_minutes: float = 0.1
    cube_xy: int = 256
    cube_z: int = 2

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.home = self.root / "membraind"
        self.out = self.root / "predictions"
        self.models = self.home / "models"
        self.skeletons = self.root / "skeletons.json"
        self.mapping = [PathMap(daemon=self.root, vast=WINDOWS_DRIVE)]
        save_skeleton_json(self.skeletons, [AnnotationLayerData(name=ANCHOR_LAYER, objects=[])])
        self.emulator = VastEmulator(self.em, skeletons=self.skeletons, port=0, windows_paths=self.mapping)
        self.daemon: SupervisedDaemon | None = None
        self.nodes: list[SkeletonNode] = []
        self._segments: dict[int, int] = {}  # class -> segment id

    # -- set-up ---------------------------------------------------------------------------
    def start_vast(self) -> None:
        """Start "VAST" (the emulator, in Windows mode)."""
        self.emulator.start()

    def write_config(self) -> Path:
        """The daemon's configuration: the loop on this VAST, through the Windows mapping."""
        base = {
            "service": {
                "home": self.home, "roots": [self.root, self.em],
                "api": {"enabled": False},
                "vast": [{
                    "port": self.emulator.port, "anchor_layers": [ANCHOR_LAYER], "model": MODEL, "out": self.out,
                    "cube_xy": self.cube_xy, "cube_z": self.cube_z, "poll_seconds": 0.5,
                    "paths": [{"daemon": str(self.root), "vast": WINDOWS_DRIVE}],
                    "learn": True, "quiet_seconds": self.quiet_seconds, "learn_voxels": self.learn_voxels,
                    "learn_minutes": self.learn_minutes,
                }],
            },
            "predict": {"tile_size": 512},
        }  # fmt: skip
        return write_daemon_toml(self.root / "membraind.toml", base, self.config or {})

    def start_daemon(self, log: Path | None = None) -> SupervisedDaemon:
        """Start ``membraind serve`` on the loop's configuration (and wait until it is ready)."""
        self.daemon = SupervisedDaemon(self.write_config(), log or self.root / "daemon.log").start()
        return self.daemon

    def close(self) -> None:
        """Stop the daemon (if running) and VAST."""
        if self.daemon is not None:
            self.daemon.kill()
        self.emulator.stop()

    # -- the user's actions -----------------------------------------------------------------
    def paint(self, sections: list[int], coverage: float = 0.15, seed: int = 0) -> int:
        """Dab the brush over ``coverage`` of each section, painting the true classes into VAST's
        segmentation layer as segments named ``membrane`` and ``interior``; returns the voxels painted."""
        painted = 0
        with VastClient("127.0.0.1", self.emulator.port) as client:
            layer = client.find_layer(SEGMENTATION_NAME)
            if not self._segments:
                self._segments = {MEMBRANE: client.add_segment(layer, "membrane"),
                                  INTERIOR: client.add_segment(layer, "interior")}  # fmt: skip
            with client.api_layer(layer):
                for z in sections:
                    truth = self.labels[z]
                    mask = brush_discs(truth.shape, coverage, seed=seed * 1000 + z)
                    box = Box(x0=0, x1=truth.shape[1], y0=0, y1=truth.shape[0], z0=z, z1=z + 1)
                    ids = client.read_segmentation(box)[0]
                    for cls, segment in self._segments.items():
                        ids[mask & (truth == cls)] = segment
                    client.write_segmentation(box, ids[None])
                    painted += int(np.count_nonzero(mask & np.isin(truth, list(self._segments))))
        return painted

    def place_nodes(self, points: list[tuple[int, int, int]]) -> None:
        """Add skeleton nodes (mip-0 x, y, z) to the anchor layer, as a user tracing a neurite does."""
        start = len(self.nodes)
        self.nodes += [
            SkeletonNode(index=start + i, x=x, y=y, z=z, parent=start + i - 1 if start + i else None)
            for i, (x, y, z) in enumerate(points)
        ]  # fmt: skip
        skeleton = SkeletonObject(id=1, nodes=self.nodes)
        save_skeleton_json(self.skeletons, [AnnotationLayerData(name=ANCHOR_LAYER, objects=[skeleton])])

    # -- what the daemon does -------------------------------------------------------------------
    def versions(self) -> list[ModelVersion]:
        """The lab model's versions so far (ready or not)."""
        return versions(self.models, MODEL)

    def wait_version(self, number: int, timeout: float = 600.0) -> ModelVersion:
        """Wait until version ``number`` is ready (its training stopped)."""
        failed_before = {r.id for r in self.learning_jobs() if r.state == "failed"}

        def ready() -> ModelVersion | None:
            found = {v.version: v for v in self.versions()}.get(number)
            if found is not None and found.ready:
                return found
            failed = [r for r in self.learning_jobs() if r.state == "failed" and r.id not in failed_before]
            if failed:  # no use waiting: say why
                raise RuntimeError(f"learning {MODEL} v{number} failed (job {failed[0].id}): {failed[0].error}")
            return None

        return self._wait(ready, timeout, f"{MODEL} v{number} to be learned")

    def wait_shown(self, number: int, timeout: float = 600.0) -> list:
        """Wait until every anchor job predicting with version ``number`` is done; returns their records."""
        def done() -> list | None:
            records = self.jobs(lambda r: r.kind == "predict" and f"{MODEL}@v{number}" in _models(r))
            if records and all(r.final for r in records) and self._covers(records):
                return records
            return None

        return self._wait(done, timeout, f"the cubes predicted with {MODEL} v{number} to be shown in VAST")

    def learning_jobs(self) -> list:
        """The daemon's learning jobs (journal records), oldest first."""
        return self.jobs(lambda record: record.id.startswith(f"{LEARN_JOB_PREFIX}{MODEL}-"))

    def jobs(self, keep: Callable[[object], bool] = lambda record: True) -> list:
        """The daemon's jobs (journal records) that ``keep`` keeps, oldest first."""
        from membraind.service.journal import SqliteJournal

        journal_file = self.home / "state" / "journal.db"
        if not journal_file.exists():
            return []
        journal = SqliteJournal(journal_file)
        try:
            return [r for r in journal.list(limit=None, oldest_first=True) if keep(r)]
        finally:
            journal.close()

    def shown_tiles(self) -> list[Path]:
        """The mip-0 (first-level) tiles of the membrane layer shown in VAST."""
        return sorted((self.out / MODEL / "membrane").glob("mip*/**/*.png"))

    def anchor_sections(self) -> set[int]:
        """Sections the nodes' cubes cover (inside the volume)."""
        depth = open_volume(self.em).shape[0]
        half = self.cube_z // 2
        return {z for node in self.nodes for z in range(node.z - half, node.z - half + self.cube_z) if 0 <= z < depth}

    def _covers(self, records: list) -> bool:
        """Whether the finished jobs cover every node placed so far."""
        points = {(p.x, p.y, p.z) for r in records for p in r.job().spec.target.points}
        return {(n.x, n.y, n.z) for n in self.nodes} <= points

    def _wait(self, predicate, timeout: float, what: str):
        try:
            return wait_until(predicate, timeout, interval=0.25, what=what)
        except TimeoutError as exc:
            tail = self.daemon.log_tail() if self.daemon is not None else ""
            raise TimeoutError(f"{exc}; the daemon's log ends:\n{tail}") from None


def _models(record) -> list[str]:
    spec = record.job().spec
    return list(getattr(spec, "models", []))

