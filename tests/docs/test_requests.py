"""Every example in docs/requests.md is a request file the daemon accepts.

Each fenced ```json and ```toml block is written to a file with that suffix, with the
documentation's placeholder root ``/data/lab`` replaced by a temporary folder, and
read with :func:`read_request` (the request folder's own parser); its paths must then
pass the daemon's root check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from membraind.jobs.specs import FinetuneSpec, PredictSpec
from membraind.predict.request import VastSource
from membraind.service.job import Job
from membraind.service.paths import check_paths
from membraind.service.watchers.requests import read_request

DOC = Path(__file__).resolve().parents[2] / "docs" / "requests.md"
PLACEHOLDER = "/data/lab"
FENCE = re.compile(r"^```(json|toml)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str, int]]:
    text = DOC.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


BLOCKS = _blocks()


def _read(tmp_path: Path, suffix: str, body: str, name: str = "example") -> Job:
    root = tmp_path / "lab"
    root.mkdir(exist_ok=True)
    path = tmp_path / f"{name}.{suffix}"
    path.write_text(body.replace(PLACEHOLDER, str(root)), encoding="utf-8")
    job = read_request(path)
    check_paths(job.spec, [root.resolve()])  # absolute, and under the allowed folder
    return job


def test_the_doc_has_examples():
    assert len(BLOCKS) >= 10, f"expected many request examples in {DOC}"


@pytest.mark.parametrize(("suffix", "body", "line"), BLOCKS, ids=[f"line{line}-{suffix}" for suffix, _, line in BLOCKS])
def test_example_is_a_valid_request(tmp_path, suffix, body, line):
    assert PLACEHOLDER in body, f"docs/requests.md line {line}: example paths should be under {PLACEHOLDER}"
    job = _read(tmp_path, suffix, body)
    assert isinstance(job, Job)
    assert job.source == "request-file"


def test_examples_cover_every_kind_mode_and_format(tmp_path):
    kinds, targets, formats = set(), set(), set()
    vast = finetune_modes = 0
    for i, (suffix, body, _) in enumerate(BLOCKS):
        job = _read(tmp_path, suffix, body, name=f"example{i}")
        kinds.add((job.spec.kind, suffix))
        formats.add(suffix)
        if isinstance(job.spec, PredictSpec):
            targets.add(job.spec.target.mode)
            vast += isinstance(job.spec.volume, VastSource)
        if isinstance(job.spec, FinetuneSpec):
            finetune_modes += job.spec.mode is not None
    assert {k for k, _ in kinds} == {
        "predict", "train", "finetune", "segment2d", "export-onnx", "evaluate", "vast-paint", "import-model",
    }
    assert formats == {"json", "toml"}
    assert targets == {"volume", "box", "anchors", "image"}
    assert vast >= 1 and finetune_modes >= 1


def test_fields_of_each_kind_are_in_the_doc():
    """Each spec field appears in the doc (as a table row `field`), so a new field gets documented."""
    from membraind.jobs.specs import SPEC_TYPES

    text = DOC.read_text(encoding="utf-8")
    missing = [
        f"{spec.__name__}.{name}" for spec in SPEC_TYPES for name in spec.model_fields if f"| `{name}` |" not in text
    ]
    assert not missing, f"fields not documented in docs/requests.md: {missing}"
