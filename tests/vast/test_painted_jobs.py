"""Train, fine-tune and evaluate jobs that learn from what is painted in VAST (the emulator over TCP)."""

from __future__ import annotations

import os

import pytest
from membraind_client.progress import no_progress

from membraind.config import load_settings
from membraind.errors import InputError
from membraind.jobs.execute import run_job
from membraind.jobs.specs import EvaluateSpec, FinetuneSpec, PredictSpec, TrainSpec, parse_spec
from membraind.nn.bundle import read_metadata
from membraind.predict.request import BoxRegion, VastSource
from membraind.vast.client import VastClient
from membraind.vast.emulator import VastEmulator
from membraind.vast.painted import VastGroundTruth, survey_painted
from membraind.volumes.box import Box
from tests.vast.test_painted import paint

TINY = {
    "MEMBRAIND_UNET__DEPTH": "2",
    "MEMBRAIND_UNET__BASE_FILTERS": "4",
    "MEMBRAIND_TRAINING__BATCH_SIZE": "2",
    "MEMBRAIND_TRAINING__EPOCHS": "1",
    "MEMBRAIND_TRAINING__STEPS_PER_EPOCH": "2",
    "MEMBRAIND_TRAINING__DEVICE": "cpu",
}


@pytest.fixture
def settings(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("MEMBRAIND_"):
            monkeypatch.delenv(key)
    for key, value in {**TINY, "MEMBRAIND_SERVICE__HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.fixture
def painted(painting_em):
    """An emulated VAST (4 x 4 x 50 nm voxels) with membrane and interior painted in sections 0 and 2."""
    with VastEmulator(painting_em, voxel_size=(4.0, 4.0, 50.0)) as emulator, VastClient("127.0.0.1", emulator.port) as client:
        seg = client.find_layer("segmentation")
        membrane, interior = client.add_segment(seg, "membrane"), client.add_segment(seg, "interior")
        for z in (0, 2):
            paint(client, seg, z, {interior: [(120, 100, 64), (120, 220, 64)], membrane: [(120, 160, 5), (60, 160, 5)]})
        yield emulator, client


@pytest.mark.parametrize("mip", [0, 1])
def test_training_from_vast_records_mip_voxel_size_and_what_was_painted(painted, settings, tmp_path, mip):
    _, client = painted
    source = VastGroundTruth(port=client.port, mip=mip)
    spec = TrainSpec(vast=source, out=tmp_path / "run")
    result = run_job(spec, settings, no_progress, lambda: False)
    meta = read_metadata(tmp_path / "run" / "model")
    assert meta.mip == mip and meta.voxel_size_nm == (4.0 * 2**mip, 4.0 * 2**mip, 50.0)
    record = meta.ground_truth
    assert record is not None and record.painted_voxels == survey_painted(client, source).voxels
    assert set(record.voxels_per_class) == {"interior", "membrane"} and f"(mip {mip})" in record.source
    # the images are kept in the run folder and recorded, for a child's episodic replay
    assert (tmp_path / "run" / "ground_truth" / "train" / "labels").is_dir()
    assert meta.training["data"][0]["em"].endswith("ground_truth/train/em")
    assert "model bundle" in result.summary
    if mip:  # prediction with this bundle runs at the mip it learned at
        predict = PredictSpec(volume=VastSource(port=client.port, layer="EM"), bundles=[tmp_path / "run" / "model"],
                              out=tmp_path / "predicted", target=BoxRegion(box=Box(x0=0, x1=64, y0=0, y1=64, z0=0, z1=1, mip=1)),
                              show_in_vast=False)  # fmt: skip
        (layer,) = run_job(predict, settings, no_progress, lambda: False).outputs
        assert layer.endswith("mip1.vsvi")  # no mip asked for: the bundle's


def test_a_child_fine_tuned_episodically_replays_the_parents_painting(painted, settings, tmp_path):
    _, client = painted
    source = VastGroundTruth(port=client.port)
    run_job(TrainSpec(vast=source, out=tmp_path / "parent"), settings, no_progress, lambda: False)
    child = FinetuneSpec(vast=source, parent=tmp_path / "parent" / "model", mode="episodic", out=tmp_path / "child")
    run_job(child, settings, no_progress, lambda: False)
    meta = read_metadata(tmp_path / "child" / "model")
    assert meta.parent_data and meta.ground_truth is not None


def test_evaluate_job_scores_a_model_against_the_painting(painted, settings, tmp_path):
    _, client = painted
    source = VastGroundTruth(port=client.port)
    run_job(TrainSpec(vast=source, out=settings.service.models_path() / "octopus" / "v1", model="octopus"), settings,
            no_progress, lambda: False)  # fmt: skip
    spec = parse_spec({"kind": "evaluate", "model": "octopus", "vast": {"port": client.port}, "out": str(tmp_path / "eval")})
    assert isinstance(spec, EvaluateSpec)
    result = run_job(spec, settings, no_progress, lambda: False)
    assert "membrane F1" in result.summary and "over 2 image(s)" in result.summary
    assert (tmp_path / "eval" / "scores.json").is_file()
    assert any(p.endswith("_overlay.png") for p in result.outputs)


def test_ground_truth_is_label_files_or_vast_and_says_so():
    with pytest.raises(ValueError, match="give em and labels .*labels missing.*or vast"):
        TrainSpec(em="em", out="run")
    with pytest.raises(ValueError, match="not both"):
        TrainSpec(em="em", labels="labels", vast=VastGroundTruth(), out="run")
    with pytest.raises(ValueError, match="bundle .* or model"):
        EvaluateSpec(vast=VastGroundTruth(), out="eval")
    with pytest.raises(ValueError, match="'cytoplasm' is no class"):
        VastGroundTruth(classes={"cytoplasm": ["cyto"]})


def test_nothing_painted_fails_the_job_with_what_to_paint(painting_em, settings, tmp_path):
    with VastEmulator(painting_em) as emulator:
        spec = TrainSpec(vast=VastGroundTruth(port=emulator.port), out=tmp_path / "run")
        with pytest.raises(InputError, match="nothing is painted"):
            run_job(spec, settings, no_progress, lambda: False)


def test_the_command_line_learns_from_vast_and_lists_the_lineage(painted, tmp_path):
    from tests.conftest import run_cli

    _, client = painted
    env = {**TINY, "MEMBRAIND_SERVICE__MODELS_DIR": str(tmp_path / "models")}
    vast = ["--vast", f"vast://127.0.0.1:{client.port}/EM"]
    trained = run_cli("train", *vast, "--segmentation-layer", "segmentation", "--model", "octopus", env=env)
    assert trained.returncode == 0, trained.stderr
    listed = run_cli("models", env=env)
    assert listed.returncode == 0, listed.stderr
    *_, header, row = listed.stdout.splitlines()  # after the starter model's line
    assert header.split()[-2:] == ["GROUND", "TRUTH"]
    assert row.split()[:2] == ["octopus", "v1"] and ", mip 0: interior " in row and "membrane" in row and "voxels" in row
    scored = run_cli("evaluate", "--model", "octopus", *vast, "--out", str(tmp_path / "eval"), env=env)
    assert scored.returncode == 0, scored.stderr
    assert "membrane F1" in scored.stdout and (tmp_path / "eval" / "scores.json").is_file()
    lost = run_cli("train", "--gt-mip", "1", "--out", str(tmp_path / "run"), env=env)
    assert lost.returncode == 2 and "--gt-mip read(s) ground truth from VAST: add --vast" in lost.stderr
