"""The U-Net: shapes, 'same' padding, input-size checks, configuration, determinism."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from membraind.nn.settings import UNetConfig
from membraind.nn.unet import UNet, count_parameters


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig(depth=1, base_filters=4, norm="none", classes=2),
        UNetConfig(depth=2, base_filters=6, norm="group", classes=3),
        UNetConfig(depth=3, base_filters=4, norm="batch", classes=2, dropout=0.3),
        UNetConfig(depth=4, base_filters=4, norm="group", classes=3),
    ],
    ids=lambda c: f"d{c.depth}-{c.norm}-c{c.classes}",
)
def test_output_has_input_size_and_one_channel_per_class(config):
    model = UNet(config).eval()
    x = torch.rand(2, 1, 2 * config.multiple, 3 * config.multiple)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, config.classes, 2 * config.multiple, 3 * config.multiple)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_same_padding_accepts_any_multiple():
    model = UNet(UNetConfig(depth=4, base_filters=4)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)
        assert model(torch.rand(1, 1, 96, 96)).shape == (1, 2, 96, 96)


@pytest.mark.parametrize("size", [(100, 96), (96, 72), (33, 33)])
def test_input_not_a_multiple_raises_naming_the_multiple(size):
    model = UNet(UNetConfig(depth=4, base_filters=4))
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.rand(1, 1, *size))


def test_attributes_used_by_transfer_learning():
    model = UNet(UNetConfig(depth=3, base_filters=4, classes=3))
    assert isinstance(model.head, nn.Conv2d) and model.head.out_channels == 3 and model.head.kernel_size == (1, 1)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    decoder_ids = {id(p) for p in model.decoder.parameters()}
    head_ids = {id(p) for p in model.head.parameters()}
    assert encoder_ids and decoder_ids and not (encoder_ids & decoder_ids)
    assert encoder_ids | decoder_ids | head_ids == {id(p) for p in model.parameters()}


def test_norm_choice_sets_layers_and_bias():
    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]  # noqa: E731
    batch = UNet(UNetConfig(depth=2, base_filters=4, norm="batch"))
    group = UNet(UNetConfig(depth=2, base_filters=12, norm="group"))
    plain = UNet(UNetConfig(depth=2, base_filters=4, norm="none"))
    assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
    assert all(m.num_channels % m.num_groups == 0 for m in group.modules() if isinstance(m, nn.GroupNorm))
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in plain.modules())
    assert all(c.bias is None for c in convs(batch)) and all(c.bias is not None for c in convs(plain))


def test_dropout_only_in_deepest_stages():
    model = UNet(UNetConfig(depth=3, base_filters=4, dropout=0.5))
    with_dropout = [i for i, stage in enumerate(model.encoder) if any(isinstance(m, nn.Dropout2d) for m in stage)]
    assert with_dropout == [2, 3]
    assert not any(isinstance(m, nn.Dropout2d) for m in model.decoder.modules())


def test_parameter_count_depends_on_config():
    counts = {
        (depth, filters, classes): count_parameters(UNet(UNetConfig(depth=depth, base_filters=filters, classes=classes)))
        for depth, filters, classes in [(2, 4, 2), (3, 4, 2), (2, 8, 2), (2, 4, 3)]
    }
    assert len(set(counts.values())) == len(counts)
    assert counts[(3, 4, 2)] > counts[(2, 4, 2)] and counts[(2, 8, 2)] > counts[(2, 4, 2)]
    assert counts[(2, 4, 3)] - counts[(2, 4, 2)] == 4 + 1  # one more 1x1 output filter: weights + bias


def test_seeded_construction_and_eval_are_deterministic():
    config = UNetConfig(depth=3, base_filters=4)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        with torch.no_grad():
            outputs.append(UNet(config).eval()(x))
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(8)
    with torch.no_grad():
        assert not torch.equal(outputs[0], UNet(config).eval()(x))


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_filters=4))
    model(torch.rand(2, 1, 16, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("field, value", [("depth", 0), ("depth", 7), ("classes", 4), ("dropout", 0.95), ("norm", "layer")])
def test_invalid_config_rejected(field, value):
    with pytest.raises(ValidationError, match=field):
        UNetConfig(**{field: value})


def test_multiple_is_two_to_the_depth():
    assert [UNetConfig(depth=d).multiple for d in range(1, 7)] == [2, 4, 8, 16, 32, 64]
