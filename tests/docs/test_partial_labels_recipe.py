"""The user guide's recipe "Partial labels from ISBI-style files" works as written.

The section's Python block and its `membraind inspect-gt` line are taken from
docs/user-guide.md and run, as a user would, in a folder holding real ISBI sections as
``train/image`` and ``train/label``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from membraind.volumes.image_files import read_image
from tests.conftest import run_cli

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
TITLE = "### Partial labels from ISBI-style files"


def _section() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(TITLE)
    following = re.compile(r"^#{2,3} ", re.MULTILINE).search(text, start + len(TITLE))
    return text[start : following.start() if following else len(text)]


def test_the_recipe_leaves_part_of_each_isbi_section_unannotated_and_raises_no_warning(tmp_path, isbi):
    section = _section()
    (script,) = re.findall(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    (inspect,) = re.findall(r"^membraind inspect-gt .*$", section, re.MULTILINE)
    for folder in ("image", "label"):
        (tmp_path / "train" / folder).mkdir(parents=True)
        for name in ("00.png", "01.png", "02.png"):
            shutil.copy(isbi / "train" / folder / name, tmp_path / "train" / folder / name)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=120)

    result = run_cli(*shlex.split(inspect)[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr and "3 pair(s) OK" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"0\d ", line)]
    assert len(rows) == 3
    for name, _, annotated, membrane in rows:
        assert float(annotated.rstrip("%")) < 100  # the recipe erased part of the section
        assert 10 < float(membrane.rstrip("%")) < 30  # and the rest keeps ISBI's membrane share
        original = read_image(isbi / "train" / "label" / f"{name}.png")
        partial = read_image(tmp_path / "partial" / "label" / f"{name}.png")
        kept = partial != 128
        assert kept.any() and np.array_equal(partial[kept], original[kept])  # nothing but erasing happened

    unmapped = run_cli(*shlex.split(inspect.replace("0=2,255=1,128=0", "isbi"))[1:], cwd=tmp_path)
    assert unmapped.returncode == 2 and "read it as not annotated: --mapping 0=2,128=0,255=1" in unmapped.stderr
