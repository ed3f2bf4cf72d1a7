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
