"""The user guide's "Working with VAST" commands, run against the emulator they tell you to start.

The emulator is started with the guide's own command line (only the port is changed, so
that tests never collide), in a folder holding ``em/`` (real ISBI sections as TIFFs
recording 4 x 4 x 50 nm) and the guide's example ``skeletons.json``. Every layer the
guide's commands name must then be a layer of that emulator.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest
import tifffile

from membraind.vast.client import VastClient
from membraind.volumes.image_files import read_image
from tests.conftest import REPO, run_cli
from tests.vast.test_emulator import _first_line

GUIDE = REPO / "docs" / "user-guide.md"
GUIDE_PORT = "22081"


def _section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("## Working with VAST")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", _section(), re.MULTILINE | re.DOTALL)


def _commands() -> list[list[str]]:
    """Every ``membraind`` command of the section's shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["membraind"]:
                commands.append(words[1:])
    return commands


def _layer_names(command: list[str]) -> set[str]:
    """The VAST layers a command names (numbers are positions, not names)."""
    names = set()
    for i, word in enumerate(command):
        if word.startswith("vast://") and word.count("/") == 3:
            names.add(word.rsplit("/", 1)[1])
        if word in ("--em-layer", "--segmentation-layer", "--anchor-layer"):
            names.add(command[i + 1])
    return {name for name in names if not name.isdigit()}


def _on_port(command: list[str], port: int) -> list[str]:
    return [word.replace(f":{GUIDE_PORT}", f":{port}") if word != GUIDE_PORT else str(port) for word in command]


@pytest.fixture
def guide_emulator(isbi, tmp_path):
    """The emulator as the guide starts it, in ``tmp_path``; yields its port."""
    (tmp_path / "em").mkdir()
    for z in range(2):  # 250 pixels per micron: 4 nm
        tifffile.imwrite(tmp_path / "em" / f"{z:02d}.tif", read_image(isbi / "train" / "image" / f"{z:02d}.png"),
                         imagej=True, resolution=(250.0, 250.0), metadata={"unit": "micron", "spacing": 0.05})  # fmt: skip
    (skeletons,) = _blocks("json")
    (tmp_path / "skeletons.json").write_text(skeletons, encoding="utf-8")
    (command,) = [c for c in _commands() if c[0] == "vast-emulator"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    proc = subprocess.Popen([sys.executable, "-m", "membraind", *_on_port(command, 0)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = _first_line(proc, 60)
        yield int(line.split()[3].rsplit(":", 1)[1])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_guide_names_only_layers_the_emulator_has(guide_emulator):
    named = set().union(*map(_layer_names, _commands()))
    assert len(named) >= 3  # an EM, a segmentation and an annotation layer: the guide's commands are found at all
    with VastClient("127.0.0.1", guide_emulator, timeout=10) as client:
        layers = {layer.name for layer in client.layers()}
        voxel_size = client.info().voxel_size
    assert named <= layers, f"the guide names layers the emulator lacks: {sorted(named - layers)}; it has {sorted(layers)}"
    assert voxel_size == pytest.approx((4.0, 4.0, 50.0))  # from the TIFFs' tags


def test_the_guides_ground_truth_command_runs_and_carries_the_voxel_size(guide_emulator, tmp_path):
    (command,) = [c for c in _commands() if c[0] == "vast-ground-truth" and "--convention" not in c]
    command = _on_port(command, guide_emulator)
    command[command.index("--box") + 1] = "0,256,0,256,0,2"  # the guide's box lies beyond two ISBI sections
    result = run_cli(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--mapping classes --voxel-size 4,4,50 --out RUN" in result.stdout
    assert len(list((tmp_path / "gt" / "em").glob("*.png"))) == 2


def _verdicts(report: str) -> list[str]:
    """A vast-check report's verdict per check and its summary line (times and paths left out)."""
    return re.findall(r"^(?:ok|warn|fail) +[^:]+:", report, re.MULTILINE) + re.findall(
        r"^\d+ ok, \d+ warn, \d+ fail", report, re.MULTILINE
    )


def test_the_guides_vast_check_report_is_what_the_emulator_answers(guide_emulator, tmp_path):
    (command,) = [c for c in _commands() if c[0] == "vast-check"]
    result = run_cli(*_on_port(command, guide_emulator), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (shown,) = [block for block in _blocks("text") if "checked the VAST at" in block]
    assert _verdicts(result.stdout) == _verdicts(shown) and len(_verdicts(shown)) > 10
    assert (tmp_path / "vast-check.json").is_file()
