"""The import-model job: networks trained elsewhere become bundles, or versions of a lab model."""

from __future__ import annotations

import pytest
import torch
from membraind_client.progress import no_progress
from pydantic import ValidationError
from safetensors.torch import save_file

from membraind.config import Settings
from membraind.errors import InputError
from membraind.jobs.execute import claim_version, run_job
from membraind.jobs.specs import ImportModelSpec, parse_spec
from membraind.nn.bundle import load_bundle
from membraind.nn.versions import latest_version, resolve_model, versions
from tests.conftest import run_cli
from tests.nn.test_onnx_io import SMALL, _model, _tiny_onnx


def _run(spec):
    return run_job(spec, Settings(), no_progress, lambda: False)


def test_a_state_dict_then_an_onnx_file_become_v1_and_v2_of_a_lab_model(tmp_path):
    models = tmp_path / "models"
    source = _model(SMALL, seed=3)
    weights = tmp_path / "external.safetensors"
    save_file({k: v.clone() for k, v in source.state_dict().items()}, str(weights))
    spec = parse_spec({"kind": "import-model", "file": str(weights), "model": "octopus-vl", "architecture": SMALL.model_dump(),
                       "mip": 1, "voxel_size_nm": [8, 8, 30]})  # fmt: skip
    spec = claim_version(spec, models)
    assert spec.version == 1 and spec.out == models / "octopus-vl" / "v1"
    result = _run(spec)
    assert "imported as lab model octopus-vl v1" in result.summary
    first = load_bundle(models / "octopus-vl" / "v1" / "model")
    meta = first.metadata
    assert (meta.version, meta.source, meta.name, meta.mip, meta.voxel_size_nm) == (1, "state-dict-import", "octopus-vl", 1, (8, 8, 30))
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(first.model(x), source(x))

    # The next version from an ONNX file, through the command line.
    _tiny_onnx(tmp_path / "foreign.onnx")
    done = run_cli("import-model", str(tmp_path / "foreign.onnx"), "--model", "octopus-vl", "--patch-size", "32",
                   env={"MEMBRAIND_SERVICE__MODELS_DIR": str(models)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "importing version 2" in done.stdout
    listed = versions(models, "octopus-vl")
    assert [v.version for v in listed] == [1, 2] and all(v.ready for v in listed)
    assert latest_version(models, "octopus-vl").version == 2 and resolve_model(models, "octopus-vl@v1").version == 1
    second = load_bundle(listed[1].bundle).metadata
    assert (second.version, second.source, second.patch_size) == (2, "onnx-import", 32)
    table = run_cli("models", "--models-dir", str(models))
    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines() if line.startswith("octopus-vl ")]
    assert [(row[1], row[4]) for row in rows] == [("v1", "state-dict-import"), ("v2", "onnx-import")]

    # A file that is not there claims no version.
    missing = run_cli("import-model", str(tmp_path / "nope.onnx"), "--model", "octopus-vl",
                      env={"MEMBRAIND_SERVICE__MODELS_DIR": str(models)})  # fmt: skip
    assert missing.returncode == 2 and "nope.onnx does not exist" in missing.stderr
    assert [v.version for v in versions(models, "octopus-vl")] == [1, 2]


def test_an_import_into_a_bundle_folder(tmp_path):
    _tiny_onnx(tmp_path / "foreign.onnx", out_channels=3)
    spec = ImportModelSpec(file=tmp_path / "foreign.onnx", out=tmp_path / "bundle", patch_size=32,
                           class_names=["interior", "membrane", "mitochondria"])  # fmt: skip
    assert claim_version(spec, tmp_path / "models") == spec and spec.bundle == tmp_path / "bundle"
    _run(spec)
    meta = load_bundle(tmp_path / "bundle").metadata
    assert meta.version is None and meta.class_names == ["interior", "membrane", "mitochondria"] and meta.name == "foreign"
    with pytest.raises(InputError, match="must name each of the 3 output channels"):
        _run(spec.model_copy(update={"out": tmp_path / "other", "class_names": ["a", "b"]}))


def test_an_import_names_where_it_goes(tmp_path):
    with pytest.raises(ValidationError, match="give out .* or model"):
        ImportModelSpec(file=tmp_path / "x.onnx")
    with pytest.raises(ValidationError, match="not both"):
        ImportModelSpec(file=tmp_path / "x.onnx", out=tmp_path / "b", model="octopus-vl")
    with pytest.raises(InputError, match="no version folder"):
        _run(ImportModelSpec(file=tmp_path / "x.onnx", model="octopus-vl"))
