"""Unpainted-pixel learning: patches that reach into unpainted EM, the teacher's term, the setting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from membraind.demo.brush import brush_discs
from membraind.groundtruth.classes import UNANNOTATED
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import GroundTruthImage, load_ground_truth
from membraind.groundtruth.sampler import PatchSampler
from membraind.groundtruth.settings import SamplerSettings
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.bundle import load_bundle
from membraind.nn.settings import TrainingSettings, UNetConfig, UnpaintedSettings
from membraind.nn.training_setup import build_trainer
from membraind.nn.unet import UNet
from membraind.groundtruth.painted_share import painted_share, unpainted_active
from membraind.nn.unpainted import UnpaintedLearning

TINY_UNET = UNetConfig(depth=2, base_filters=4)


@pytest.fixture(scope="module")
def brushed(isbi):
    """ISBI sections 00-02 (192 px crops) painted with brush discs over 15%, and section 03 in full."""
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    crops = [GroundTruthImage(gt.name, gt.em[:192, :192], gt.labels[:192, :192]) for gt in images[:4]]
    painted = [GroundTruthImage(gt.name, gt.em, np.where(brush_discs(gt.labels.shape, 0.15, seed=k), gt.labels,
                                                         UNANNOTATED).astype(np.uint8)) for k, gt in enumerate(crops[:3])]  # fmt: skip
    return TrainingData(painted, crops[3:], [])


def test_partial_patches_hold_painted_and_unpainted_pixels(brushed):
    sampler = PatchSampler(brushed.train, 64, min_painted=0.05, seed=3)
    assert not sampler.rotate  # cut axis-aligned
    for _ in range(40):
        patch = sampler.sample()
        painted = np.mean(patch.labels != UNANNOTATED)
        assert painted >= 0.05 - 1e-6 and (patch.labels == UNANNOTATED).any()
        y, x = patch.centre
        assert 32 <= y <= 192 - 32 and 32 <= x <= 192 - 32  # the window lies inside the section
    with pytest.raises(Exception, match="paint wider|too narrow|fits wholly"):
        PatchSampler(brushed.train, 64)  # the same discs hold no whole 64 px patch


def test_auto_is_on_below_the_painted_share(brushed):
    share = painted_share(brushed.train)
    assert 0.14 < share < 0.2
    auto = UnpaintedSettings()
    assert unpainted_active(auto, share) and not unpainted_active(auto, 1.0)
    assert not unpainted_active(UnpaintedSettings(mode="off"), share)
    assert unpainted_active(UnpaintedSettings(mode="on"), 1.0)


def test_the_term_teaches_unpainted_pixels_only_where_the_teacher_is_sure():
    torch.manual_seed(0)
    model = UNet(TINY_UNET)
    learning = UnpaintedLearning(model, UnpaintedSettings(confidence=0.5))
    x = torch.rand(2, 1, 32, 32)
    logits = model(x)
    painted = torch.ones(2, 32, 32, dtype=torch.uint8)
    assert float(learning.loss(logits, x, painted).detach()) == 0.0  # all painted: painted pixels stay the truth
    unpainted = torch.zeros(2, 32, 32, dtype=torch.uint8)
    assert float(learning.loss(logits, x, unpainted).detach()) > 0.0  # confidence 0.5: every pixel is a target
    sure = UnpaintedLearning(model, UnpaintedSettings(confidence=0.99))
    assert float(sure.loss(logits, x, unpainted).detach()) < float(learning.loss(logits, x, unpainted).detach())


def test_the_teacher_follows_the_student_slowly():
    torch.manual_seed(0)
    student = UNet(TINY_UNET)
    learning = UnpaintedLearning(student, UnpaintedSettings(teacher_decay=0.9))
    before = [p.clone() for p in learning.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    learning.update(student)
    for old, new in zip(before, learning.teacher.parameters()):
        assert torch.allclose(new, old + 0.1, atol=1e-5)


def _train(run_dir, data, mode: str):
    training = TrainingSettings(epochs=1, steps_per_epoch=2, batch_size=2, device="cpu", unpainted={"mode": mode})
    sampler = SamplerSettings(patch_size=64, min_painted=0.05)
    return load_bundle(build_trainer(run_dir, data, training, unet=TINY_UNET, sampler=sampler).run())


def test_on_and_off_train_differently_deterministically_and_are_recorded(tmp_path, brushed):
    on, again, off = (_train(tmp_path / name, brushed, mode) for name, mode in (("on", "on"), ("again", "on"), ("off", "off")))
    weights = [b.model.state_dict() for b in (on, again, off)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the same seed: the same network
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert on.metadata.training["settings"]["unpainted"]["mode"] == "on"
    assert on.metadata.training["unpainted"]["active"] and not off.metadata.training["unpainted"]["active"]
    assert on.metadata.training["unpainted"]["min_painted"] == 0.05
    assert 0.14 < on.metadata.training["unpainted"]["painted_share"] < 0.2


def test_auto_learns_from_unpainted_pixels_of_brush_strokes_only(tmp_path, brushed, isbi_full_crops):
    training = TrainingSettings(epochs=1, steps_per_epoch=1, batch_size=2, device="cpu")  # mode auto
    sparse = build_trainer(tmp_path / "sparse", brushed, training, unet=TINY_UNET)
    full = build_trainer(tmp_path / "full", isbi_full_crops, training, unet=TINY_UNET)
    assert sparse.unpainted is not None and sparse.batches.sampler.min_painted == 0.05
    assert full.unpainted is None and full.batches.sampler.min_painted == 1.0


@pytest.fixture(scope="module")
def isbi_full_crops(isbi):
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    crops = [GroundTruthImage(gt.name, gt.em[:192, :192], gt.labels[:192, :192]) for gt in images[:3]]
    return TrainingData(crops[:2], crops[2:], [])


def test_fine_tuning_takes_its_own_learning_rate_when_given(brushed):
    from membraind.nn.bundle import Bundle, ModelMetadata
    from membraind.nn.settings import TransferSettings

    torch.manual_seed(0)
    parent_metadata = ModelMetadata(name="p", architecture=TINY_UNET, class_names=["interior", "membrane"],
                                    normalization={}, patch_size=64)  # fmt: skip
    parent = Bundle(path=None, metadata=parent_metadata, model=UNet(TINY_UNET))
    training = TrainingSettings(epochs=1, steps_per_epoch=1, batch_size=2, device="cpu", learning_rate=2e-3)
    own = build_trainer("unused", brushed, training, parent=parent, transfer=TransferSettings(learning_rate=5e-4))
    same = build_trainer("unused", brushed, training, parent=parent, transfer=TransferSettings())
    assert [g["lr"] for g in own.optimizer.param_groups] == [5e-4]
    assert [g["lr"] for g in same.optimizer.param_groups] == [2e-3]


def test_another_labs_look_is_reproducible_and_keeps_the_labels():
    from membraind.demo.lab_looks import OTHER_LAB, LabLook, synthetic_ground_truth

    plain = synthetic_ground_truth(5, 1, LabLook(cell_diameter=OTHER_LAB.cell_diameter), shape=(128, 128))[0]
    other, again = (synthetic_ground_truth(5, 1, OTHER_LAB, shape=(128, 128))[0] for _ in range(2))
    assert np.array_equal(other.em, again.em) and np.array_equal(other.labels, plain.labels)
    assert other.em.mean() > plain.em.mean() + 20  # brighter (gamma 0.55)
