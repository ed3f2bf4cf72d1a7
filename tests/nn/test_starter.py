"""The starter model: shipped in the package, listed, and where a lab's first version starts."""

from __future__ import annotations

import pytest

from membraind.config import load_settings
from membraind.errors import InputError
from membraind.jobs.execute import claim_version, make_trainer, starting_point
from membraind.jobs.specs import FinetuneSpec, TrainSpec
from membraind.nn import starter
from membraind.nn.bundle import load_bundle
from membraind.nn.bundle_layout import WEIGHTS_FILE
from membraind.nn.starter import STARTER_DIR, starter_path

FAST = {"epochs": 1, "steps_per_epoch": 1, "patch_size": 64, "device": "cpu"}


@pytest.fixture
def gt(tmp_path, isbi):
    """Three 192 px ISBI crops as EM and label folders."""
    from membraind.volumes.image_files import read_image, write_image

    for name in ("00", "01", "02"):
        for kind in ("image", "label"):
            write_image(tmp_path / "gt" / kind / f"{name}.png", read_image(isbi / "train" / kind / f"{name}.png")[:192, :192])
    return {"em": tmp_path / "gt" / "image", "labels": tmp_path / "gt" / "label", "mapping": "isbi"}


def test_the_starter_ships_in_the_package_and_loads():
    assert starter_path() == STARTER_DIR
    bundle = load_bundle(STARTER_DIR)
    assert bundle.metadata.name == "starter" and bundle.metadata.description.startswith("ISBI 2012 + synthetic EM")
    assert (STARTER_DIR / WEIGHTS_FILE).stat().st_size < 6_000_000  # a few MB: half-precision weights
    assert bundle.metadata.outcome is not None and bundle.metadata.outcome.kept_val_membrane_f1 > 0.6


def test_membraind_models_lists_the_starter(tmp_path):
    from tests.conftest import run_cli

    listed = run_cli("models", "--models-dir", str(tmp_path / "models"))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith(f"starter (shipped with membraind, {STARTER_DIR}): ISBI 2012 + synthetic EM")


def test_a_lab_models_first_version_starts_from_the_starter(tmp_path, gt):
    settings = load_settings()
    spec = claim_version(TrainSpec(model="octopus-vl", **gt, **FAST), tmp_path / "models")
    trainer = make_trainer(spec, settings)
    assert trainer.bundle.parent == str(STARTER_DIR)
    assert trainer.bundle.architecture == load_bundle(STARTER_DIR).metadata.architecture
    scratch = claim_version(TrainSpec(model="octopus-vl", start_from="scratch", **gt, **FAST), tmp_path / "models")
    assert make_trainer(scratch, settings).bundle.parent is None
    assert starting_point(TrainSpec(out=tmp_path / "run", **gt)) is None  # a plain run folder: from scratch


def test_finetune_without_a_parent_starts_from_the_starter(tmp_path, gt):
    assert starting_point(FinetuneSpec(out=tmp_path / "run", **gt)) == STARTER_DIR
    first = claim_version(FinetuneSpec(model="octopus-vl", **gt), tmp_path / "models")
    assert starting_point(first) == STARTER_DIR  # no earlier version to fine-tune
    with pytest.raises(ValueError, match="a finetune starts from a parent"):
        FinetuneSpec(out=tmp_path / "run", start_from="scratch", **gt)


def test_without_a_starter_the_default_trains_from_scratch_and_asking_for_it_says_what_to_do(tmp_path, gt, monkeypatch):
    monkeypatch.setattr(starter, "STARTER_DIR", tmp_path / "no-starter")
    assert starting_point(TrainSpec(model="octopus-vl", out=tmp_path / "models" / "octopus-vl" / "v1", **gt)) is None
    with pytest.raises(InputError, match="the starter model is missing from this installation"):
        starting_point(TrainSpec(out=tmp_path / "run", start_from="starter", **gt))
    with pytest.raises(InputError, match="start from scratch"):
        starting_point(FinetuneSpec(out=tmp_path / "run", **gt))


def test_a_three_class_lab_model_starts_from_scratch_by_default(tmp_path, gt):
    spec = TrainSpec(model="octopus-vl", out=tmp_path / "models" / "octopus-vl" / "v1", **gt)
    assert starting_point(spec, classes=3) is None  # the starter has 2 classes
    assert starting_point(spec, classes=2) == STARTER_DIR
