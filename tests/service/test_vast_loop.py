"""The mEMbrain loop through the daemon, as a lab runs it: VAST on "Windows" (the emulator
in Windows mode, reached over real TCP), ``membraind serve`` as a real process, ISBI
sections painted sparsely with brush-stroke discs. Nothing is typed: the daemon learns
each version from the painting and shows its predictions where the nodes are."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import pytest

from membraind.demo.vast_loop import MODEL, WINDOWS_DRIVE, LoopLab
from membraind.groundtruth.classes import INTERIOR, MEMBRANE
from membraind.harness import wait_until
from membraind.nn.versions import version_of
from membraind.volumes.box import Box
from membraind.volumes.image_files import png_text
from membraind.volumes.open_volume import open_volume

pytestmark = pytest.mark.isbi

SMALL = {
    "unet": {"depth": 3, "base_filters": 8},
    "training": {"steps_per_epoch": 4, "batch_size": 4, "epochs": 1000, "device": "cpu"},
    "predict": {"device": "cpu", "runtime": "torch"},
}


def isbi_classes(isbi) -> np.ndarray:
    """ISBI's training labels as classes: white (255) interior, black (0) membrane."""
    volume = open_volume(isbi / "train" / "label")
    try:
        gray = volume.read(Box.from_shape(volume.shape))
    finally:
        volume.close()
    return np.where(gray > 127, INTERIOR, MEMBRANE).astype(np.uint8)


def made_by(tile) -> str:
    return png_text(tile)["membraind-made-by"]


def predicted_tiles(records) -> int:
    """Tiles the jobs computed (their summaries: 'N tiles predicted, M already up to date')."""
    return sum(int(re.match(r"(\d+) tiles predicted", r.result.summary).group(1)) for r in records)


def trained(version) -> str:
    """What a tile made by ``version`` records."""
    return f"{MODEL} v{version.version} (trained {version.record()['created']})"


def test_the_daemon_learns_versions_from_painting_and_shows_them_where_the_user_looks(tmp_path, isbi):
    lab = LoopLab(tmp_path / "lab", isbi / "train" / "image", isbi_classes(isbi), config=SMALL)
    lab.start_vast()
    try:
        painted = lab.paint([0, 1, 2], seed=0)
        lab.start_daemon()

        # v1: learned from the first painting, with no command
        v1 = lab.wait_version(1)
        record = v1.record()
        assert Path(record["parent"]).name == "starter", "a lab's first version starts from the starter model"
        assert record["ground_truth"]["painted_voxels"] >= painted
        assert record["mip"] == 0 and record["voxel_size_nm"] is not None
        (learn_v1,) = lab.learning_jobs()
        assert learn_v1.kind == "train" and learn_v1.source == "vast"

        # nodes placed: their cubes are predicted with v1 and loaded into VAST through the Windows path
        lab.place_nodes([(256, 256, 1), (300, 200, 3)])
        shown_v1 = lab.wait_shown(1)
        loads = [c for c in lab.emulator.calls if c[0] == "LOADLAYER"]
        assert len(loads) == 1 and loads[0][1].startswith(WINDOWS_DRIVE + "\\predictions\\"), loads
        assert "1 loaded 'predictions: loop membrane (lab model)'" in lab.emulator.layer_names()  # no date to go stale
        tiles = lab.shown_tiles()
        assert len(tiles) == len(lab.anchor_sections()) == 4
        assert {made_by(t) for t in tiles} == {trained(v1)}
        assert predicted_tiles(shown_v1) == len(tiles), "a tile predicted twice with v1"

        # more paint: v2 learns from v1, and the cubes shown are predicted again with it and refreshed
        calls_before = len(lab.emulator.calls)
        lab.paint([3, 4], seed=1)
        v2 = lab.wait_version(2)
        assert version_of(v2.record()["parent"], lab.models).version == 1
        assert v2.record()["ground_truth"]["painted_voxels"] > record["ground_truth"]["painted_voxels"]
        shown_v2 = lab.wait_shown(2)
        assert {made_by(t) for t in lab.shown_tiles()} == {trained(v2)}, "every tile shown is v2's"
        assert predicted_tiles(shown_v2) == len(tiles), "each tile predicted once with v2"
        later = lab.emulator.calls[calls_before:]
        assert any(c[0] == "REFRESHLAYERREGION" for c in later) and not any(c[0] == "LOADLAYER" for c in later)

        # v3: the daemon is killed while it trains, and the loop resumes after a restart
        lab.paint([5, 6], seed=2)
        running = wait_until(
            lambda: [r for r in lab.learning_jobs() if r.state == "running"
                     and r.progress_detail is not None and r.progress_detail.phase == "training"],
            600, interval=0.1, what="v3's training",
        )  # fmt: skip
        (learn_v3,) = running
        lab.daemon.signal(signal.SIGKILL)
        lab.daemon.wait(60)
        lab.start_daemon()
        v3 = lab.wait_version(3)
        lab.wait_shown(3)
        assert [v.version for v in lab.versions()] == [1, 2, 3], "a version made twice"
        learned = lab.learning_jobs()
        assert [r.id for r in learned] == [learn_v1.id, learned[1].id, learn_v3.id]
        assert all(r.state == "done" for r in learned)
        assert version_of(v3.record()["parent"], lab.models).version == 2
        assert {made_by(t) for t in lab.shown_tiles()} == {trained(v3)}
    finally:
        lab.close()
