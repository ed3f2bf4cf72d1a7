"""The client package on its own: ``pip install ./client`` into a fresh virtualenv (no
torch, no membraind), then its command talks to a real daemon.

Slow (it downloads pyzmq and pydantic from PyPI) but part of the default run: a
dependency on the daemon creeping into the client would show nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.harness import SupervisedDaemon

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 300


def run(*argv: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """A command with none of this environment's Python or membraind settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMBRAIND_", "PYTHON", "VIRTUAL_ENV"))}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_client_installs_alone_without_torch_and_pings_a_daemon(tmp_path):
    # Install from a copy: building in place would leave build/ and *.egg-info in the repository.
    source = tmp_path / "client-source"
    shutil.copytree(REPO / "client", source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python, command = venv / "bin" / "python", venv / "bin" / "membraind-client"
    installed = run(python, "-m", "pip", "install", "--disable-pip-version-check", source, cwd=tmp_path,
                    timeout=INSTALL_TIMEOUT)  # fmt: skip
    assert installed.returncode == 0, f"pip install ./client failed (PyPI reachable?):\n{installed.stdout[-3000:]}\n{installed.stderr[-3000:]}"

    check = run(python, "-c", "import importlib.util, json, sys, membraind_client, membraind_client.cli; "
                "print(json.dumps({'file': membraind_client.__file__, 'modules': sorted(sys.modules), "
                "'torch': importlib.util.find_spec('torch') is not None, "
                "'membraind': importlib.util.find_spec('membraind') is not None}))", cwd=tmp_path)  # fmt: skip
    assert check.returncode == 0, check.stderr
    found = json.loads(check.stdout)
    assert Path(found["file"]).is_relative_to(venv)  # the installed copy, not the repository's
    assert "torch" not in found["modules"] and "membraind" not in found["modules"]
    assert not found["torch"] and not found["membraind"]  # not even installed beside it

    helped = run(command, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "usage: membraind-client" in helped.stdout and "exit status:" in helped.stdout

    home = tmp_path / "home"
    api = ipc_api(tmp_path)
    endpoint, events = api["endpoint"], api["events"]
    config = write_daemon_toml(tmp_path / "membraind.toml", {"service": {"home": home, "api": api}})
    daemon = SupervisedDaemon(config, tmp_path / "daemon.log").start()
    try:
        pinged = run(command, "--endpoint", endpoint, "--events", events, "--json", "ping", cwd=tmp_path)
    finally:
        daemon.stop()
        daemon.kill()
    assert pinged.returncode == 0, f"{pinged.stderr}\ndaemon log:\n{daemon.log_tail()}"
    pong = json.loads(pinged.stdout)
    assert pong["type"] == "pong" and pong["counts"] == {}
