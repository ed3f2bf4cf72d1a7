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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session (`make test` installs Debian's redis-server when it is missing)."""
    from membraind.harness import RedisServer

    try:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis server, emptied for this test."""
    redis_server.flush()
    return redis_server.url


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


class ApiLab:
    """A daemon home whose configuration serves the ZeroMQ API on ipc sockets in ``tmp``.

    ``config`` (the configuration file's shape, as a dict) is laid over that base
    configuration (see :func:`membraind.daemon_toml.merged`).
    """

    def __init__(self, tmp: Path, isbi: Path, config: dict | None = None) -> None:
        from membraind.daemon_toml import ipc_api, write_daemon_toml

        self.tmp, self.isbi, self.home = tmp, isbi, tmp / "home"
        api = ipc_api(tmp)
        self.endpoint, self.events = api["endpoint"], api["events"]
        self.log = tmp / "daemon.log"
        base = {"service": {"home": self.home, "roots": [isbi], "api": api}}
        self.config = write_daemon_toml(tmp / "membraind.toml", base, config or {})

    def supervised(self):
        """The daemon for this configuration, not started yet."""
        from membraind.harness import SupervisedDaemon

        return SupervisedDaemon(self.config, self.log)

    def client(self, **options):
        """A ``membraind_client.Client`` for this daemon (5 s timeout, 2 retries unless given)."""
        from membraind_client import Client

        return Client(self.endpoint, events=self.events, **{"timeout": 5.0, "retries": 2, **options})

    def segment(self, out: str, sections: tuple[int, int] = (0, 1)) -> dict:
        """A segment2d request that really runs, on the CPU in about a second."""
        return {"kind": "segment2d", "membrane": str(self.isbi / "train" / "label"), "out": str(self.home / out),
                "sections": list(sections)}  # fmt: skip


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, isbi) -> Path:
    """A small U-Net (depth 4, 8 filters) trained briefly on ISBI sections 0-9.

    Trained, not random, so tests of prediction see realistic activations; a few hundred
    patches are enough for membranes to stand out (F1 around 0.7).
    """
    from membraind.groundtruth.label_mapping import LabelMapping
    from membraind.groundtruth.pairs import load_ground_truth
    from membraind.groundtruth.settings import SamplerSettings
    from membraind.groundtruth.training_data import TrainingData
    from membraind.nn.settings import TrainingSettings, UNetConfig
    from membraind.nn.training_setup import build_trainer

    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    training = TrainingSettings(epochs=3, steps_per_epoch=20, batch_size=8, device="cpu", seed=1)
    out = tmp_path_factory.mktemp("trained")
    return build_trainer(
        out / "run", TrainingData(images[:10], images[10:11]), training, unet=UNetConfig(depth=4, base_filters=8),
        sampler=SamplerSettings(patch_size=128), name="isbi-small",
    ).run()
