"""scripts/ensure-system-packages: what `make test` and `make demo` do about missing
Debian packages. Run for real with bash, on a PATH that holds only the tools each case
gives it (an apt-get that records its calls, an `id` that says "not root")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-system-packages"
BASH = shutil.which("bash")
TOOLS = ("mktemp", "tail", "head", "rm", "cat", "chmod", "touch")  # what the script itself calls


def make_path(folder: Path) -> Path:
    """A PATH folder with only the basic tools the script uses (no apt-get, no sudo, no redis-server)."""
    folder.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), folder / tool)
    return folder


def fake(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!" + BASH + "\n" + body)
    path.chmod(0o755)


def run(path: Path, *packages: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = {"PATH": str(path), "PYTHON": python, "HOME": str(path.parent)}
    return subprocess.run([BASH, str(SCRIPT), "--for", "make test", *packages], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_nothing_missing_is_silent(tmp_path):
    path = make_path(tmp_path / "bin")
    fake(path, "redis-server", "exit 0\n")
    done = run(path, "python3-venv", "redis-server")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_missing_without_apt_get_stops_with_one_line(tmp_path):
    done = run(make_path(tmp_path / "bin"), "redis-server")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "make test needs redis-server" in lines[0] and "package manager" in lines[0]


def test_missing_without_root_or_sudo_names_the_command(tmp_path):
    path = make_path(tmp_path / "bin")
    fake(path, "apt-get", f"touch {tmp_path}/apt-was-called\n")
    fake(path, "id", "echo 1000\n")  # not root, and no sudo on PATH
    done = run(path, "redis-server", "chromium-driver")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "membraind: make test needs redis-server chromium-driver; run 'sudo apt-get install -y redis-server "
        "chromium-driver' (or ask your administrator), then run it again"
    ]
    assert not (tmp_path / "apt-was-called").exists()


def test_root_installs_with_apt_get_updating_the_lists_when_install_fails(tmp_path):
    path = make_path(tmp_path / "bin")
    calls = tmp_path / "calls"
    # Like a fresh machine: install fails until the package lists are updated.
    fake(path, "apt-get", f"""echo "$*" >> {calls}
case "$1" in
  update) touch {tmp_path}/updated ;;
  install) [ -e {tmp_path}/updated ] || exit 100
           printf '#!{BASH}\\nexit 0\\n' > {path}/redis-server; chmod +x {path}/redis-server ;;
esac
""")
    fake(path, "id", "echo 0\n")
    done = run(path, "redis-server")
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == ["install -y -q redis-server", "update -q", "install -y -q redis-server"]
    assert "installing redis-server (needed by make test) with apt-get" in done.stderr


def test_failed_install_shows_apt_gets_words_and_stops(tmp_path):
    path = make_path(tmp_path / "bin")
    fake(path, "apt-get", 'echo "E: Unable to locate package $4"; exit 100\n')
    fake(path, "id", "echo 0\n")
    done = run(path, "redis-server")
    assert done.returncode == 1
    assert "E: Unable to locate package redis-server" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("membraind: apt-get could not install redis-server")


def test_too_old_python_is_named(tmp_path):
    path = make_path(tmp_path / "bin")
    old = tmp_path / "python2"
    old.write_text("#!" + BASH + '\n[ "$1" = --version ] && { echo "Python 2.7.18"; exit 0; }; exit 1\n')
    old.chmod(0o755)
    done = run(path, "redis-server", python=str(old))
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"membraind: make test needs Python 3.10 or newer as '{old}' (found: Python 2.7.18); "
        "install it, or run make PYTHON=/path/to/python3.11"
    ]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_and_ci_run_the_same_command():
    repo = SCRIPT.parents[1]
    ci = (repo / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line and not line.startswith("#")][-1] == "make test"
    readme = (repo / "README.md").read_text()
    assert "make test   #" in readme and "make demo   #" in readme
