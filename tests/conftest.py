"""Shared fixtures: the real ISBI 2012 data in ../shared, and small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ISBI = Path(os.environ.get("ISBI2012_DIR", REPO.parent / "shared" / "data" / "isbi2012"))


@pytest.fixture(scope="session")
def isbi() -> Path:
    """The ISBI 2012 data set (train/image, train/label, test/image)."""
    assert (ISBI / "train" / "label").is_dir(), (
        f"ISBI 2012 data not found at {ISBI}: the tests need ../shared/data/isbi2012 "
        "(or ISBI2012_DIR pointing at a copy)"
    )
    return ISBI


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``membraind`` command line in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "membraind", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, isbi) -> Path:
    """A small U-Net (depth 4, 8 filters) trained briefly on ISBI sections 0-9.

    Trained, not random, so tests of prediction see realistic activations; a few hundred
    patches are enough for membranes to stand out (F1 around 0.7).
    """
    from membraind.config import Settings
    from membraind.groundtruth.label_mapping import LabelMapping
    from membraind.groundtruth.pairs import load_ground_truth
    from membraind.nn.trainer import Trainer, TrainingData

    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    settings = Settings.model_validate(
        {
            "unet": {"depth": 4, "base_filters": 8},
            "training": {"epochs": 3, "steps_per_epoch": 20, "batch_size": 8, "device": "cpu", "seed": 1},
            "sampler": {"patch_size": 128},
        }
    )
    out = tmp_path_factory.mktemp("trained")
    return Trainer(out / "run", TrainingData(images[:10], images[10:11]), settings, name="isbi-small").run()
