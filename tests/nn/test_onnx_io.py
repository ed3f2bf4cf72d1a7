"""ONNX export (parity with PyTorch on real ISBI sections), ONNX and state-dict imports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file

from membraind.errors import InputError
from membraind.groundtruth.normalization import IntensityNormalization
from membraind.nn.bundle import CURRENT_FORMAT, ModelMetadata, load_bundle, save_bundle
from membraind.nn.onnx_io import (
    INPUT_NAME,
    OUTPUT_NAME,
    OnnxPredictor,
    export_onnx,
    import_onnx,
    import_state_dict,
    torch_probabilities,
)
from membraind.nn.settings import UNetConfig
from membraind.nn.unet import UNet
from membraind.volumes.image_files import read_image

CONFIG = UNetConfig(depth=4, base_filters=8, norm="batch")
NORM = IntensityNormalization()
TOLERANCE = 1e-4


def _model(config: UNetConfig = CONFIG, seed: int = 0) -> UNet:
    """A seeded U-Net with non-default batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = UNet(config).train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 1, 64, 64) * 2 + 0.5)
    return model.eval()


def _metadata(config: UNetConfig = CONFIG, name: str = "parity") -> ModelMetadata:
    return ModelMetadata(
        name=name,
        architecture=config,
        class_names=["interior", "membrane", "third"][: config.classes],
        normalization=NORM,
        patch_size=256,
    )


@pytest.fixture(scope="module")
def sections(isbi) -> np.ndarray:
    """Two real ISBI 2012 sections, normalised: (2, 1, 512, 512) float32."""
    images = [NORM.normalize_section(read_image(isbi / "train" / "image" / f"{i}.png")) for i in (25, 26)]
    return np.stack(images)[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A saved bundle, its loaded form, and its ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    path = save_bundle(root / "bundle", _model(), _metadata())
    bundle = load_bundle(path)
    return bundle, export_onnx(bundle, root / "exported.onnx")


def test_export_is_valid_onnx_with_named_dynamic_io(exported):
    _, onnx_path = exported
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto)
    (em,), (out,) = proto.graph.input, proto.graph.output
    assert (em.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = [d.dim_param or d.dim_value for d in em.type.tensor_type.shape.dim]
    assert dims[1] == 1 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))
    assert not any(p.name.startswith(".") for p in onnx_path.parent.iterdir())  # no temporary files left


def test_onnx_matches_pytorch_on_isbi_sections(exported, sections):
    bundle, onnx_path = exported
    onnx_probs = OnnxPredictor(onnx_path).predict(sections)
    torch_probs = torch_probabilities(bundle.model, sections)
    assert onnx_probs.shape == torch_probs.shape == (2, 2, 512, 512)
    assert onnx_probs.dtype == np.float32
    assert np.abs(onnx_probs - torch_probs).max() < TOLERANCE
    np.testing.assert_allclose(onnx_probs.sum(axis=1), 1.0, atol=1e-5)
    # Guard against a trivially constant network making parity meaningless.
    assert onnx_probs[:, 1].std() > 1e-3


def test_dynamic_axes_non_square_input(exported, sections):
    bundle, onnx_path = exported
    crop = sections[:1, :, 100:356, 50:434]  # 256 x 384
    onnx_probs = OnnxPredictor(onnx_path).predict(crop)
    assert onnx_probs.shape == (1, 2, 256, 384)
    assert np.abs(onnx_probs - torch_probabilities(bundle.model, crop)).max() < TOLERANCE


def test_metadata_round_trip_through_the_onnx_file(exported):
    bundle, onnx_path = exported
    predictor = OnnxPredictor(onnx_path)
    assert predictor.metadata == bundle.metadata
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["membraind.model_json"])["name"] == "parity"
    assert props["membraind.format_version"] == str(CURRENT_FORMAT)


def test_torch_probabilities_keeps_the_training_mode(exported, sections):
    bundle, _ = exported
    bundle.model.train()
    try:
        torch_probabilities(bundle.model, sections[:1, :, :64, :64])
        assert bundle.model.training
    finally:
        bundle.model.eval()


def test_import_of_the_exported_file_predicts_the_same(exported, sections, tmp_path):
    _, onnx_path = exported
    imported = import_onnx(onnx_path, tmp_path / "imported", "reimport", NORM, patch_size=256)
    assert imported.model is None and imported.onnx_path == tmp_path / "imported" / "model.onnx"
    metadata = imported.metadata
    assert (metadata.source, metadata.onnx_outputs, metadata.class_names) == (
        "onnx-import",
        "probabilities",
        ["interior", "membrane"],
    )
    assert metadata.architecture == CONFIG  # taken from the embedded model.json
    expected = OnnxPredictor(onnx_path).predict(sections)
    np.testing.assert_array_equal(OnnxPredictor(imported.onnx_path).predict(sections), expected)
    with pytest.raises(InputError, match="already exists"):
        import_onnx(onnx_path, tmp_path / "imported", "again", NORM, patch_size=256)


def _tiny_onnx(path, in_channels: int = 1, out_channels: int = 2, with_softmax: bool = False) -> None:
    """A hand-built 1x1-convolution network, as if exported by another tool."""
    weight = helper.make_tensor(
        "w", TensorProto.FLOAT, [out_channels, in_channels, 1, 1], np.linspace(-2, 2, out_channels * in_channels)
    )
    nodes = [helper.make_node("Conv", ["image", "w"], ["scores" if not with_softmax else "logits"])]
    if with_softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", in_channels, "h", "w"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", out_channels, "h", "w"])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_foreign_onnx_with_logits_gets_softmax(tmp_path):
    _tiny_onnx(tmp_path / "logits.onnx")
    bundle = import_onnx(tmp_path / "logits.onnx", tmp_path / "b", "foreign", NORM, patch_size=32)
    assert bundle.metadata.onnx_outputs == "logits" and bundle.metadata.architecture.multiple == 16
    em = np.random.default_rng(0).random((1, 1, 32, 48), dtype=np.float32)
    probs = OnnxPredictor(bundle.onnx_path).predict(em)
    weights = np.linspace(-2, 2, 2, dtype=np.float32)
    logits = weights[None, :, None, None] * em
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_foreign_onnx_with_probabilities_and_three_classes(tmp_path):
    _tiny_onnx(tmp_path / "p.onnx", out_channels=3, with_softmax=True)
    bundle = import_onnx(tmp_path / "p.onnx", tmp_path / "b", "foreign3", NORM, patch_size=32)
    assert bundle.metadata.onnx_outputs == "probabilities"
    assert bundle.metadata.class_names == ["interior", "membrane", "third"]


def test_onnx_taking_three_channels_is_refused(tmp_path):
    _tiny_onnx(tmp_path / "rgb.onnx", in_channels=3)
    with pytest.raises(InputError, match=r"rgb\.onnx takes 3 input channels.*one gray EM channel"):
        import_onnx(tmp_path / "rgb.onnx", tmp_path / "b", "rgb", NORM, patch_size=32)
    assert not (tmp_path / "b").exists()


def test_onnx_with_too_many_classes_is_refused(tmp_path):
    _tiny_onnx(tmp_path / "five.onnx", out_channels=5)
    with pytest.raises(InputError, match="C = 2"):
        import_onnx(tmp_path / "five.onnx", tmp_path / "b", "five", NORM, patch_size=32)


def test_not_an_onnx_file_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08junk" * 10)
    with pytest.raises(InputError, match="junk.onnx"):
        import_onnx(tmp_path / "junk.onnx", tmp_path / "b", "junk", NORM, patch_size=32)


SMALL = UNetConfig(depth=2, base_filters=4, classes=3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_import_state_dict(tmp_path, suffix):
    source = _model(SMALL, seed=3)
    # A training checkpoint as other code writes it: on the GPU side, wrapped by DataParallel.
    state = {k: v.clone() for k, v in source.state_dict().items()}
    weights = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(weights))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 12}, weights)
    bundle = import_state_dict(weights, tmp_path / "b", SMALL, "external", NORM, patch_size=64)
    assert bundle.metadata.source == "state-dict-import" and bundle.path == tmp_path / "b"
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(bundle.model(x), source(x))


def test_state_dict_with_a_wrong_shape_names_the_key(tmp_path):
    state = _model(SMALL).state_dict()
    state["head.weight"] = torch.zeros(2, 4, 1, 1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(InputError, match=r"w\.safetensors.*'head\.weight' has shape \(2, 4, 1, 1\)"):
        import_state_dict(tmp_path / "w.safetensors", tmp_path / "b", SMALL, "bad", NORM, patch_size=64)
    assert not (tmp_path / "b").exists()


def test_state_dict_with_foreign_keys_names_a_key(tmp_path):
    state = {f"backbone.{k}": v for k, v in _model(SMALL).state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(InputError, match=r"lacks parameter 'encoder\.0\.0\.weight'"):
        import_state_dict(tmp_path / "w.pt", tmp_path / "b", SMALL, "bad", NORM, patch_size=64)


def test_pickled_objects_are_never_unpickled(tmp_path):
    torch.save({"model": UNet(SMALL)}, tmp_path / "whole_model.pt")  # a whole module, not a state dict
    with pytest.raises(InputError, match=r"whole_model\.pt holds pickled Python objects"):
        import_state_dict(tmp_path / "whole_model.pt", tmp_path / "b", SMALL, "bad", NORM, patch_size=64)
