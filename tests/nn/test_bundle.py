"""Model bundles: round trip, atomic replacement, format migration, and every kind of damage."""

from __future__ import annotations

import json

import pytest
import torch

from membraind.errors import InputError
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.nn.bundle import (
    CURRENT_FORMAT,
    ONNX_FILE,
    Bundle,
    ModelMetadata,
    load_bundle,
    read_metadata,
    save_bundle,
)
from membraind.nn.settings import UNetConfig
from membraind.nn.unet import UNet

CONFIG = UNetConfig(depth=2, base_filters=4, norm="batch")
NORM = IntensityNormalization(low_percentile=1.0, high_percentile=99.0, scope="dataset", dataset_range=(12.0, 230.0))


def make_metadata(config: UNetConfig = CONFIG, **changes) -> ModelMetadata:
    fields = dict(
        name="test-net",
        architecture=config,
        class_names=["interior", "membrane", "third"][: config.classes],
        normalization=NORM,
        patch_size=64,
        training={"learning_rate": 1e-3, "data": [{"em": "/x/em", "labels": "/x/labels"}]},
        history=[{"epoch": 1, "train_loss": 0.5}],
    )
    return ModelMetadata(**{**fields, **changes})


def trained_like_model(config: UNetConfig = CONFIG, seed: int = 0) -> UNet:
    """A seeded model whose batch-norm running statistics are not the defaults."""
    torch.manual_seed(seed)
    model = UNet(config)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 1, 32, 32) * 3 + 1)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = trained_like_model()
    return save_bundle(tmp_path / "bundle", model, make_metadata()), model


def test_round_trip_gives_identical_outputs(saved):
    path, model = saved
    bundle = load_bundle(path)
    assert isinstance(bundle, Bundle) and bundle.path == path and bundle.onnx_path is None
    assert not bundle.model.training
    x = torch.rand(2, 1, 48, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(bundle.model(x), model(x))
    for key, tensor in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], tensor), key


def test_model_json_validates_and_holds_the_normalization(saved):
    path, _ = saved
    raw = json.loads((path / "model.json").read_text())
    assert raw["format_version"] == CURRENT_FORMAT
    assert raw["normalization"]["dataset_range"] == [12.0, 230.0]
    metadata = read_metadata(path)
    assert metadata == ModelMetadata.model_validate(raw)
    assert metadata.normalization == NORM
    assert metadata.architecture == CONFIG and metadata.membrane_channel == 1
    assert metadata.class_names == ["interior", "membrane"] and metadata.source == "membraind"
    assert metadata.training["data"][0]["em"] == "/x/em" and metadata.history[0]["epoch"] == 1


def test_save_over_an_existing_bundle_replaces_it(saved, tmp_path):
    path, _ = saved
    (path / "stale.txt").write_text("from the old bundle")
    other_config = UNetConfig(depth=1, base_filters=4, classes=3)
    other = trained_like_model(other_config, seed=5)
    save_bundle(path, other, make_metadata(other_config, name="second"))
    bundle = load_bundle(path)
    assert bundle.metadata.name == "second" and bundle.metadata.architecture == other_config
    assert not (path / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary folders left


def test_save_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path):
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "image.png").write_bytes(b"not a bundle")
    with pytest.raises(InputError, match="not a model bundle"):
        save_bundle(precious, trained_like_model(), make_metadata())
    assert (precious / "image.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_save_rejects_metadata_of_another_architecture(tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        save_bundle(tmp_path / "b", trained_like_model(), make_metadata(UNetConfig(depth=3, base_filters=4)))


def test_metadata_checks_class_names_against_the_architecture():
    with pytest.raises(ValueError, match="class_names"):
        make_metadata(class_names=["interior", "membrane", "third"])


# -- damage: each case must give an InputError naming the file ---------------------------


def _cut_weights_in_half(path):
    weights = path / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _garbage_weights(path):
    (path / "weights.safetensors").write_bytes(b"\x00\xffgarbage" * 100)


def _no_weights(path):
    (path / "weights.safetensors").unlink()


def _no_json(path):
    (path / "model.json").unlink()


def _invalid_json(path):
    (path / "model.json").write_text('{"name": "x", ')


def _wrong_field_type(path):
    raw = json.loads((path / "model.json").read_text())
    raw["patch_size"] = "big"
    (path / "model.json").write_text(json.dumps(raw))


def _weights_of_another_architecture(path):
    raw = json.loads((path / "model.json").read_text())
    raw["architecture"]["base_filters"] = 8
    (path / "model.json").write_text(json.dumps(raw))


def _newer_format(path):
    raw = json.loads((path / "model.json").read_text())
    raw["format_version"] = 99
    (path / "model.json").write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "damage, file, words",
    [
        (_cut_weights_in_half, "weights.safetensors", "corrupt"),
        (_garbage_weights, "weights.safetensors", "corrupt"),
        (_no_weights, "weights.safetensors", "missing"),
        (_no_json, "model.json", "missing"),
        (_invalid_json, "model.json", "not valid JSON"),
        (_wrong_field_type, "model.json", "patch_size"),
        (_weights_of_another_architecture, "weights.safetensors", "shape"),
        (_newer_format, "model.json", "newer membraind"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_damaged_bundle_gives_input_error_naming_the_file(saved, damage, file, words):
    path, _ = saved
    damage(path)
    with pytest.raises(InputError) as info:
        load_bundle(path)
    message = str(info.value)
    assert str(path / file) in message and words in message


def test_wrong_architecture_error_names_a_key(saved):
    path, _ = saved
    _weights_of_another_architecture(path)
    with pytest.raises(InputError, match=r"parameter 'encoder\.0\.0\.weight'"):
        load_bundle(path)


def test_weights_missing_a_stage_name_the_key(saved):
    path, _ = saved
    raw = json.loads((path / "model.json").read_text())
    raw["architecture"]["depth"] = 3
    (path / "model.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"lacks parameter 'encoder\.3\."):
        load_bundle(path)


@pytest.mark.parametrize("make_path", [lambda p: p / "nowhere", lambda p: p / "bundle" / "model.json"])
def test_path_that_is_not_a_bundle_folder(saved, tmp_path, make_path):
    bad = make_path(tmp_path)
    with pytest.raises(InputError, match=str(bad).replace("\\", "\\\\")):
        load_bundle(bad)


def test_version_0_model_json_is_migrated(saved):
    path, model = saved
    raw = json.loads((path / "model.json").read_text())
    raw["format_version"] = 0
    raw["intensity"] = raw.pop("normalization")  # the version-0 name of the field
    del raw["source"]
    (path / "model.json").write_text(json.dumps(raw))
    bundle = load_bundle(path)
    assert bundle.metadata.format_version == CURRENT_FORMAT
    assert bundle.metadata.normalization == NORM and bundle.metadata.source == "membraind"
    assert bundle.metadata.outcome is None  # bundles from before the outcome was recorded still load
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(bundle.model(x), model(x))


@pytest.mark.parametrize(("pixel_size", "voxel_size"), [(None, None), ([5.0, 4.0], (4.0, 5.0, 4.0))])
def test_version_1_pixel_size_becomes_the_voxel_size(saved, pixel_size, voxel_size):
    path, _ = saved
    raw = json.loads((path / "model.json").read_text())
    raw["format_version"] = 1
    del raw["voxel_size_nm"]
    raw["pixel_size_nm"] = pixel_size  # (y, x); membraind wrote null
    (path / "model.json").write_text(json.dumps(raw))
    metadata = load_bundle(path).metadata
    assert metadata.format_version == CURRENT_FORMAT and metadata.voxel_size_nm == voxel_size


def test_voxel_size_round_trips_in_any_form(saved, tmp_path):
    _, model = saved
    bundle = save_bundle(tmp_path / "voxel", model, make_metadata(voxel_size_nm="4,4,50"))
    assert json.loads((bundle / "model.json").read_text())["voxel_size_nm"] == [4.0, 4.0, 50.0]
    assert read_metadata(bundle).voxel_size_nm == (4.0, 4.0, 50.0)
    with pytest.raises(InputError, match="voxel_size_nm"):
        raw = json.loads((bundle / "model.json").read_text())
        (bundle / "model.json").write_text(json.dumps({**raw, "voxel_size_nm": [4, 4]}))
        read_metadata(bundle)


def test_onnx_only_bundle_loads_without_a_model(saved):
    path, _ = saved
    (path / "weights.safetensors").unlink()
    (path / ONNX_FILE).write_bytes(b"placeholder")  # load_bundle does not open it
    bundle = load_bundle(path)
    assert bundle.model is None and bundle.onnx_path == path / ONNX_FILE
