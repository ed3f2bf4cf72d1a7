"""Training: sparse-label loss, freeze modes, cancellation, and resume after SIGKILL."""

from __future__ import annotations

import copy
import csv
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from membraind.config import load_settings
from membraind.errors import InputError
from membraind.groundtruth.label_mapping import LabelMapping
from membraind.groundtruth.pairs import load_ground_truth
from membraind.nn.bundle import load_bundle
from membraind.nn.history import EpochRecord, StopReason, TrainingOutcome
from membraind.groundtruth.training_data import TrainingData
from membraind.nn.settings import TransferSettings, UNetConfig
from membraind.nn.trainer import TrainingCancelled
from membraind.nn.training_setup import build_trainer
from membraind.nn.transfer import plan_transfer
from membraind.nn.unet import UNet
from membraind.volumes.image_files import read_image

TINY = {
    "MEMBRAIND_UNET__DEPTH": "2",
    "MEMBRAIND_UNET__BASE_FILTERS": "4",
    "MEMBRAIND_SAMPLER__PATCH_SIZE": "64",
    "MEMBRAIND_TRAINING__BATCH_SIZE": "2",
    "MEMBRAIND_TRAINING__STEPS_PER_EPOCH": "3",
    "MEMBRAIND_TRAINING__DEVICE": "cpu",
}


@pytest.fixture(scope="module")
def isbi_small(isbi):
    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    crop = [type(gt)(gt.name, gt.em[:192, :192], gt.labels[:192, :192]) for gt in images[:3]]
    return TrainingData(crop[:2], crop[2:], [])


@pytest.fixture
def tiny_settings(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MEMBRAIND_"):
            monkeypatch.delenv(key)
    for key, value in TINY.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def tiny_trainer(run_dir, data, settings, **options):
    """A trainer handed the sections that the tiny settings change (the others are defaults)."""
    return build_trainer(run_dir, data, settings.training, unet=settings.unet, sampler=settings.sampler, **options)


def _one_step(model, plan):
    optimizer = torch.optim.AdamW(plan.groups, lr=1e-2)
    model.train()
    plan.keep_frozen()
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    y = torch.randint(0, 2, (2, 32, 32))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return {k: not torch.equal(before[k], after[k]) for k in keys}


@pytest.mark.parametrize("mode", ["continue", "freeze-all-but-last", "freeze-encoder", "leaky", "episodic"])
def test_freeze_modes_freeze_what_they_say(mode):
    torch.manual_seed(1)
    model = UNet(UNetConfig(depth=2, base_filters=4))
    before = copy.deepcopy(model.state_dict())
    plan = plan_transfer(model, TransferSettings(mode=mode, leaky_factor=0.1), learning_rate=1e-2)
    _one_step(model, plan)
    after = model.state_dict()
    head = _changed(before, after, "head.")
    encoder = _changed(before, after, "encoder.")
    decoder = _changed(before, after, "decoder.")
    assert all(head.values()), "the last layer always learns"
    weights = lambda changed: [v for k, v in changed.items() if k.endswith("weight")]  # noqa: E731
    if mode == "freeze-all-but-last":
        assert not any(encoder.values()) and not any(decoder.values())
    elif mode == "freeze-encoder":
        assert not any(encoder.values())  # running statistics included
        assert all(weights(decoder))
    else:
        assert all(weights(encoder)) and all(weights(decoder))
    if mode == "leaky":
        rates = sorted(group["lr"] for group in plan.groups)
        assert rates == pytest.approx([1e-3, 1e-2])


def test_training_writes_history_curve_and_bundle(tmp_path, tiny_settings, isbi_small):
    settings = tiny_settings.model_copy(
        update={"training": tiny_settings.training.model_copy(update={"epochs": 2})}
    )
    reports = []
    bundle_path = tiny_trainer(tmp_path / "run", isbi_small, settings).run(reports.append)
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("train_loss", "train_accuracy", "train_membrane_f1", "val_loss", "val_accuracy", "val_membrane_f1"):
        assert 0 <= float(rows[-1][key]) < 10
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert reports[-1].fraction == pytest.approx(1.0)
    steps = [r for r in reports if not r.milestone]
    assert {(r.phase, r.unit, r.total) for r in steps} == {("training", "step", 2 * settings.training.steps_per_epoch)}
    assert [r.current for r in steps] == list(range(1, len(steps) + 1)), "one report per step, counted over the run"
    assert [r.phase for r in reports if r.milestone] == ["validating", "validating"], "one line per epoch"
    bundle = load_bundle(bundle_path)
    assert bundle.metadata.architecture.depth == 2
    assert bundle.metadata.patch_size == 64 and not bundle.metadata.patch_size_automatic  # as given
    assert len(bundle.metadata.history) == 2
    outcome = bundle.metadata.outcome
    best = max(bundle.metadata.history, key=lambda r: r["val_membrane_f1"])  # the first of equals
    assert (outcome.stopped, outcome.last_epoch, outcome.epochs) == (StopReason.ALL_EPOCHS, 2, 2)
    assert (outcome.kept_epoch, outcome.kept_val_membrane_f1) == (best["epoch"], best["val_membrane_f1"])
    assert outcome.describe().startswith(f"finished: all 2 epochs done; kept epoch {best['epoch']} ")


def test_cancel_stops_and_keeps_the_last_checkpoint(tmp_path, tiny_settings, isbi_small):
    settings = tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={"epochs": 5})})
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 4  # in the second epoch

    with pytest.raises(TrainingCancelled) as stopped:
        tiny_trainer(tmp_path / "run", isbi_small, settings).run(cancel=cancel)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1
    assert str(stopped.value) == (
        "training cancelled in epoch 2; kept epoch 1 (best validation membrane F1 "
        f"{saved['history'][0]['val_membrane_f1']:.4f}) in {tmp_path / 'run' / 'model'}; resuming continues after epoch 1"
    )
    outcome = load_bundle(tmp_path / "run" / "model").metadata.outcome
    assert (outcome.stopped, outcome.kept_epoch, outcome.last_epoch) == (StopReason.CANCELLED, 1, 1)
    # Running again resumes after the last finished epoch.
    tiny_trainer(tmp_path / "run", isbi_small, settings).run()
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    outcome = load_bundle(tmp_path / "run" / "model").metadata.outcome
    assert (outcome.stopped, outcome.last_epoch) == (StopReason.ALL_EPOCHS, 5)


def test_a_spent_time_budget_is_said_recorded_and_drawn(tmp_path, small_isbi_folders):
    """A budget far shorter than one step always stops training after its first step (and so epoch 1)."""
    from tests.conftest import run_cli

    em, labels = small_isbi_folders
    run = tmp_path / "run"
    command = ("train", "--em", str(em), "--labels", str(labels), "--mapping", "isbi", "--out", str(run),
               "--epochs", "5", "--minutes", "0.000001")  # fmt: skip
    result = run_cli(*command, env=TINY)
    assert result.returncode == 0, result.stderr
    assert "up to 5 epochs or 6e-05 s, whichever ends first" in result.stdout
    metadata = load_bundle(run / "model").metadata
    assert [r["epoch"] for r in metadata.history] == [1]
    assert metadata.outcome == TrainingOutcome(
        kept_epoch=1, kept_val_membrane_f1=metadata.history[0]["val_membrane_f1"], last_epoch=1, epochs=5,
        max_minutes=0.000001, stopped=StopReason.TIME_BUDGET,
    )  # fmt: skip
    said = f"stopped: time budget of 6e-05 s reached after epoch 1 of 5; {metadata.outcome.kept}; model bundle: {run / 'model'}"
    assert said in result.stdout
    assert read_image(run / "learning_curve.png").ndim == 3
    # The budget is spent: running the same command again resumes, trains nothing and says so again.
    again = run_cli(*command, env=TINY)
    assert again.returncode == 0, again.stderr
    assert "resuming after epoch 1" in again.stdout and said in again.stdout
    assert len(load_bundle(run / "model").metadata.history) == 1


def _records(val_f1: list[float]) -> list[EpochRecord]:
    """Epoch records whose validation membrane F1 is ``val_f1``, the rest plausible values."""
    return [
        EpochRecord(epoch=i + 1, seconds=60.0 * (i + 1), learning_rate=1e-3, train_loss=1 / (i + 2), train_accuracy=0.9,
                    train_membrane_f1=f + 0.02, val_loss=1.1 - f, val_accuracy=0.88, val_membrane_f1=f)  # fmt: skip
        for i, f in enumerate(val_f1)
    ]


@pytest.mark.parametrize("stopped", [StopReason.TIME_BUDGET, StopReason.ALL_EPOCHS])
def test_learning_curve_marks_the_kept_epoch_and_an_early_stop(stopped):
    from membraind.nn.history import learning_curve_figure

    records = _records([0.60, 0.71, 0.79, 0.77, 0.78, 0.76, 0.79, 0.74])  # best at 3 (7 only equals it)
    outcome = TrainingOutcome.of(records, 40, 10, stopped)
    assert (outcome.kept_epoch, outcome.last_epoch) == (3, 8)
    figure = learning_curve_figure(records, outcome)
    expected = {"kept: epoch 3 (best validation membrane F1)": 3}
    if stopped is StopReason.TIME_BUDGET:
        expected["stopped after epoch 8: time budget of 10 min reached"] = 8.5  # after epoch 8
        assert figure.get_suptitle() == (
            "stopped: time budget of 10 min reached after epoch 8 of 40; kept epoch 3 (best validation membrane F1 0.7900)"
        )
    for ax in figure.axes:
        vertical = {line.get_label(): line.get_xdata()[0] for line in ax.get_lines() if len(set(line.get_xdata())) == 1}
        assert vertical == expected, ax.get_title()
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["training", "validation", *expected]


def test_resume_after_sigkill_continues_epochs_and_curve(tmp_path, isbi):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    env.update(TINY, PYTHONUNBUFFERED="1")
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "membraind", "train",
        "--em", str(isbi / "train" / "image"), "--labels", str(isbi / "train" / "label"), "--mapping", "isbi",
        "--out", str(run), "--epochs", "6",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:  # wait for the real event: epoch 2 finished and checkpointed
            if line.startswith("epoch 2/6:"):
                break
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert 2 <= killed_at < 6
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {killed_at}" in resumed.stdout
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)  # the clock continues too
    assert len(load_bundle(run / "model").metadata.history) == 6


def test_finetune_records_its_parent(tmp_path, tiny_settings, isbi_small):
    settings = tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={"epochs": 1})})
    parent_path = tiny_trainer(tmp_path / "parent", isbi_small, settings).run()
    parent = load_bundle(parent_path)
    child_path = tiny_trainer(
        tmp_path / "child", isbi_small, settings, parent=parent, transfer=TransferSettings(mode="freeze-encoder")
    ).run()
    child = load_bundle(child_path)
    assert child.metadata.parent == str(parent_path)
    assert child.metadata.training["transfer"]["mode"] == "freeze-encoder"
    parent_encoder = {k: v for k, v in parent.model.state_dict().items() if k.startswith("encoder.")}
    for key, value in parent_encoder.items():
        assert torch.equal(child.model.state_dict()[key], value), key
    assert np.isfinite(child.metadata.history[0]["val_loss"])


@pytest.fixture
def small_isbi_folders(tmp_path, isbi):
    from membraind.volumes.image_files import read_image, write_image

    for name in ("00", "01", "02"):
        for kind in ("image", "label"):
            pixels = read_image(isbi / "train" / kind / f"{name}.png")[:192, :192]
            write_image(tmp_path / "gt" / kind / f"{name}.png", pixels)
    return tmp_path / "gt" / "image", tmp_path / "gt" / "label"


def paint_strokes(isbi, folder, width: float):
    """ISBI sections 00-02 (256 px crops) with labels kept only under two brush strokes
    ``width`` px wide, as label classes (0 not painted, 1 interior, 2 membrane)."""
    from membraind.demo.brush import keep_strokes
    from membraind.groundtruth.pairs import GroundTruthImage
    from membraind.volumes.image_files import write_image

    images = load_ground_truth(isbi / "train" / "image", isbi / "train" / "label", LabelMapping.preset("isbi"))
    strokes = [(40, 10, 110, 250), (230, 20, 150, 240)]
    crops = [GroundTruthImage(gt.name, gt.em[:256, :256], keep_strokes(gt.labels[:256, :256], width, strokes))
             for gt in images[:3]]  # fmt: skip
    for gt in crops:
        write_image(folder / "image" / f"{gt.name}.png", gt.em)
        write_image(folder / "label" / f"{gt.name}.png", gt.labels)
    return crops


def test_default_train_on_brush_strokes_chooses_the_patch_size(tmp_path, isbi):
    from membraind.groundtruth.sampler import PatchSampler
    from tests.conftest import run_cli

    env = {k: v for k, v in TINY.items() if k not in ("MEMBRAIND_SAMPLER__PATCH_SIZE", "MEMBRAIND_UNET__DEPTH")}
    env["MEMBRAIND_TRAINING__UNPAINTED__MODE"] = "off"  # whole patches: on, patches reach into unpainted EM
    narrow = tmp_path / "narrow"
    paint_strokes(isbi, narrow, 30)
    result = run_cli("train", "--em", str(narrow / "image"), "--labels", str(narrow / "label"),
                     "--out", str(tmp_path / "too-narrow"), "--epochs", "1", env=env)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(r"too narrow for training.*paint regions at least \d+ px wide in any direction", result.stderr)

    wide = tmp_path / "wide"
    painted = paint_strokes(isbi, wide, 60)
    result = run_cli("train", "--em", str(wide / "image"), "--labels", str(wide / "label"),
                     "--out", str(tmp_path / "run"), "--epochs", "1", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    chosen = int(re.search(r"patch size (\d+) px, chosen from the painted regions", result.stdout).group(1))
    metadata = load_bundle(tmp_path / "run" / "model").metadata
    assert metadata.patch_size == chosen and metadata.patch_size_automatic
    multiple = metadata.architecture.multiple  # 16 for the default depth 4
    assert chosen % multiple == 0 and 32 <= chosen < 128
    with pytest.raises(InputError, match=f"the largest that fits is {chosen} px"):  # the largest that fits
        PatchSampler(painted[:2], chosen + multiple, multiple=multiple)


def test_finetuning_chooses_at_most_the_parents_patch_size(tmp_path, tiny_settings, isbi_small, isbi):
    settings = tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={"epochs": 1})})
    parent = load_bundle(tiny_trainer(tmp_path / "parent", isbi_small, settings).run())
    assert parent.metadata.patch_size == 64
    automatic = settings.model_copy(update={"sampler": settings.sampler.model_copy(update={"patch_size": None})})
    # Fully painted sections would hold 128 px: the parent's 64 px is kept.
    trainer = tiny_trainer(tmp_path / "same", isbi_small, automatic, parent=parent)
    assert trainer.bundle.patch_size == 64 and trainer.bundle.patch_size_automatic
    # Brush strokes too narrow for 64 px patches get the largest size that fits (whole patches:
    # without unpainted-pixel learning, which would let patches reach beyond the strokes).
    painted = paint_strokes(isbi, tmp_path / "gt", 40)
    whole = automatic.model_copy(update={"training": automatic.training.model_copy(
        update={"unpainted": automatic.training.unpainted.model_copy(update={"mode": "off"})})})  # fmt: skip
    child = tiny_trainer(tmp_path / "child", TrainingData(painted[:2], painted[2:]), whole, parent=parent)
    assert 32 <= child.bundle.patch_size < 64
    reaching = tiny_trainer(tmp_path / "reaching", TrainingData(painted[:2], painted[2:]), automatic, parent=parent)
    assert reaching.bundle.patch_size == 64 and reaching.unpainted is not None  # auto: on for narrow strokes


def test_finetune_patch_size_given_is_honoured_or_refused_with_the_reason(tmp_path, tiny_settings, isbi_small):
    """An explicit patch size is never replaced by the parent's (issue 18 item 6): it is used, or refused."""
    from membraind.jobs.execute import make_trainer
    from membraind.jobs.specs import FinetuneSpec

    settings = tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={"epochs": 1})})
    parent = tiny_trainer(tmp_path / "parent", isbi_small, settings).run()
    assert load_bundle(parent).metadata.patch_size == 64

    def finetune(patch_size: int, out: str):
        spec = FinetuneSpec(em=tmp_path, labels=tmp_path, parent=parent, out=tmp_path / out, patch_size=patch_size,
                            voxel_size_nm=(4, 4, 40))  # fmt: skip
        return make_trainer(spec, settings, isbi_small)  # the path the CLI and the daemon take

    for size in (32, 128):  # smaller and larger than the parent's
        trainer = finetune(size, f"child-{size}")
        assert trainer.batches.sampler.patch_size == size
        assert trainer.bundle.patch_size == size and not trainer.bundle.patch_size_automatic
    with pytest.raises(InputError, match="patch size 42 is not a multiple of 4"):
        finetune(42, "odd")  # the parent network's depth 2 needs multiples of 4
    with pytest.raises(InputError, match=r"no 256x256 patch fits .* choose a patch size of 1\d\d px"):
        finetune(256, "too-large")  # larger than the 192 px sections


def test_episodic_finetuning_replays_the_parents_data(tmp_path, tiny_settings, small_isbi_folders):
    from membraind.groundtruth.training_data import load_training_data

    settings = tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={"epochs": 1})})
    em, labels = small_isbi_folders
    data = load_training_data(em, labels, LabelMapping.preset("isbi"), 0.34)
    assert [gt.name for gt in data.train] == ["00", "01"] and [gt.name for gt in data.validation] == ["02"]
    parent = load_bundle(tiny_trainer(tmp_path / "parent", data, settings).run())
    assert parent.metadata.training["data"][0]["em"] == str(em.resolve())
    trainer = tiny_trainer(tmp_path / "child", data, settings, parent=parent, transfer=TransferSettings(mode="episodic"))
    replay = trainer.batches.replay
    assert replay is not None and len(replay.sources) == 3  # every image the parent learned from
    images, _ = trainer.batches.draw()
    assert images.shape[0] == settings.training.batch_size
    child = load_bundle(trainer.run())
    assert child.metadata.parent_data == parent.metadata.training["data"]


def test_episodic_without_recorded_parent_data_says_what_to_do(tmp_path, tiny_settings, isbi_small):
    settings = tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update={"epochs": 1})})
    parent = load_bundle(tiny_trainer(tmp_path / "parent", isbi_small, settings).run())
    with pytest.raises(InputError, match="does not record any; use another mode"):
        tiny_trainer(tmp_path / "child", isbi_small, settings, parent=parent, transfer=TransferSettings(mode="episodic"))


def test_cli_train_export_evaluate(tmp_path, small_isbi_folders):
    from tests.conftest import run_cli

    em, labels = small_isbi_folders
    env = dict(TINY)
    result = run_cli("train", "--em", str(em), "--labels", str(labels), "--mapping", "isbi",
                     "--out", str(tmp_path / "run"), "--epochs", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert "model bundle:" in result.stdout
    bundle = tmp_path / "run" / "model"
    result = run_cli("export-onnx", str(bundle), env=env)
    assert result.returncode == 0, result.stderr
    assert (bundle / "model.onnx").is_file()
    scores = {}
    for engine in ("torch", "onnx"):
        result = run_cli("evaluate", str(bundle), "--em", str(em), "--labels", str(labels), "--mapping", "isbi",
                         "--out", str(tmp_path / engine), "--engine", engine, env=env)
        assert result.returncode == 0, result.stderr
        assert "VI split" in result.stdout and "Rand err" in result.stdout  # instance scores: labels are complete
        scores[engine] = [line for line in result.stdout.splitlines() if line.startswith("all")]
        assert (tmp_path / engine / "00_overlay.png").is_file() and (tmp_path / engine / "00_membrane.png").is_file()
    assert scores["torch"] == scores["onnx"]  # the two engines agree to the printed digits
    result = run_cli("finetune", "--from", str(tmp_path / "nope"), "--em", str(em), "--labels", str(labels),
                     "--mapping", "isbi", "--out", str(tmp_path / "ft"), env=env)
    assert result.returncode == 2 and "nope" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_sparse_loss_ignores_unannotated_pixels_whatever_they_predict(dice_weight):
    from membraind.nn.loss import SparseSegmentationLoss

    torch.manual_seed(0)
    loss_fn = SparseSegmentationLoss(dice_weight=dice_weight)
    logits = torch.randn(2, 2, 16, 16)
    target = torch.randint(0, 2, (2, 16, 16))
    target[:, :8] = -1  # the top half is not annotated
    changed = logits.clone()
    changed[:, :, :8] = torch.randn(2, 2, 8, 16) * 10  # anything at all up there
    assert loss_fn(logits, target).item() == pytest.approx(loss_fn(changed, target).item(), rel=1e-6)
    # ... while a change on annotated pixels does change the loss.
    changed[:, :, 8:] += torch.randn(2, 2, 8, 16)
    assert loss_fn(changed, target).item() != pytest.approx(loss_fn(logits, target).item(), rel=1e-3)


def test_dice_term_rewards_getting_membrane_right():
    from membraind.nn.loss import SparseSegmentationLoss

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, 3:5] = 1
    right = torch.where(target[:, None] == torch.arange(2)[None, :, None, None], 5.0, -5.0)
    wrong = -right
    loss_fn = SparseSegmentationLoss(dice_weight=1.0)
    assert loss_fn(right, target).item() < 0.05 < 1.0 < loss_fn(wrong, target).item()


def test_mask_unannotated_takes_label_classes_and_ignores_class_0():
    from membraind.nn.loss import MaskUnannotated, SparseSegmentationLoss

    torch.manual_seed(0)
    inner = SparseSegmentationLoss(dice_weight=1.0)
    loss_fn = MaskUnannotated(inner)
    logits = torch.randn(2, 2, 16, 16)
    labels = torch.randint(1, 3, (2, 16, 16), dtype=torch.uint8)  # 1 interior, 2 membrane
    labels[:, :8] = 0  # the top half is not annotated
    assert loss_fn(logits, labels).item() == pytest.approx(inner(logits, labels.long() - 1).item(), rel=1e-6)
    changed = logits.clone()
    changed[:, :, :8] = torch.randn(2, 2, 8, 16) * 10
    assert loss_fn(changed, labels).item() == pytest.approx(loss_fn(logits, labels).item(), rel=1e-6)
    # The validation loss scores probabilities against the same label classes, unannotated pixels ignored.
    probabilities = torch.softmax(logits[0], dim=0).numpy()
    other = probabilities.copy()
    other[:, :8] = other[::-1, :8]
    image_labels = labels[0].numpy()
    assert loss_fn.validation_loss(probabilities, image_labels) == pytest.approx(
        loss_fn.validation_loss(other, image_labels), rel=1e-6
    )


def test_batch_metric_counts_annotated_pixels_in_label_classes():
    from membraind.nn.evaluate import score_batch

    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0] = 1.0  # top row: membrane (class 2); bottom row: interior (class 1)
    labels = np.array([[[2, 0], [1, 2]]], np.uint8)
    counts = score_batch(logits, labels)
    assert (counts.pixels, counts.correct, counts.true_positive, counts.false_negative) == (3, 2, 1, 1)


def test_prefetch_hands_out_in_order_and_reraises():
    from membraind.groundtruth.prefetch import Prefetch

    items = iter([1, 2, ValueError("broken")])

    def draw():
        item = next(items)
        if isinstance(item, Exception):
            raise item
        return item

    ahead = Prefetch(draw, 3)
    try:
        assert [ahead.next(), ahead.next()] == [1, 2]
        with pytest.raises(ValueError, match="broken"):
            ahead.next()
    finally:
        ahead.close()


def test_a_train_job_ends_with_the_warnings_about_its_ground_truth(tmp_path, tiny_settings, small_isbi_folders):
    from membraind.jobs.execute import run_train
    from membraind.jobs.specs import TrainSpec
    from membraind.volumes.image_files import write_image

    em, labels = small_isbi_folders
    erased = read_image(labels / "01.png").copy()
    erased[:, :120] = 0  # "erased" with black, which the isbi mapping reads as membrane
    write_image(labels / "01.png", erased)
    spec = TrainSpec(em=em, labels=labels, mapping="isbi", out=tmp_path / "run", epochs=1, steps_per_epoch=1)
    result = run_train(spec, tiny_settings, lambda report: None, lambda: False)
    assert result.summary.startswith("finished: its one epoch done; kept epoch 1")
    warnings = result.summary.split("; warning: ")[1:]
    assert len(warnings) == 1 and "01.png" in warnings[0] and "membrane" in warnings[0], result.summary


def test_labels_with_a_class_the_network_lacks_stop_before_training(tmp_path, isbi):
    from tests.conftest import run_cli
    from membraind.volumes.image_files import write_image

    for name in ("00", "01"):
        write_image(tmp_path / "em" / f"{name}.png", read_image(isbi / "train" / "image" / f"{name}.png")[:128, :128])
        labels = np.where(read_image(isbi / "train" / "label" / f"{name}.png")[:128, :128] > 0, 1, 2).astype(np.uint8)
        labels[:20, :20] = 3  # a third class painted into a 2-class project
        write_image(tmp_path / "labels" / f"{name}.png", labels)
    result = run_cli("train", "--em", str(tmp_path / "em"), "--labels", str(tmp_path / "labels"), "--mapping", "classes",
                     "--out", str(tmp_path / "run"), "--epochs", "1", "--steps", "1")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run" / "checkpoint.pt").exists()
    assert f"labels {tmp_path / 'labels' / '00.png'} hold class 3 (third), but the network has 2 classes " \
           "(interior, membrane)" in result.stderr, result.stderr  # fmt: skip


def test_a_lab_model_gets_versions_with_their_lineage(tmp_path, small_isbi_folders):
    from tests.conftest import run_cli

    em, labels = small_isbi_folders
    env = TINY | {"MEMBRAIND_SERVICE__MODELS_DIR": str(tmp_path / "models")}
    data = ["--em", str(em), "--labels", str(labels), "--mapping", "isbi", "--epochs", "1"]
    first = run_cli("train", *data, "--model", "octopus-vl", "--start-from", "scratch", env=env)
    assert first.returncode == 0, first.stderr
    assert f"lab model octopus-vl: training version 1 into {tmp_path / 'models' / 'octopus-vl' / 'v1'}" in first.stdout
    second = run_cli("finetune", *data, "--model", "octopus-vl", "--mode", "leaky", env=env)  # from the latest: v1
    assert second.returncode == 0, second.stderr
    v1, v2 = (load_bundle(tmp_path / "models" / "octopus-vl" / v / "model").metadata for v in ("v1", "v2"))
    assert (v1.name, v1.version, v1.parent) == ("octopus-vl", 1, None)
    assert (v2.name, v2.version) == ("octopus-vl", 2)
    assert v2.parent == str((tmp_path / "models" / "octopus-vl" / "v1" / "model").resolve())
    listed = run_cli("models", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[2:]]  # after the starter's line and the header
    assert [(r[0], r[1]) for r in rows] == [("octopus-vl", "v1"), ("octopus-vl", "v2")]
    assert rows[1][3:6] == ["octopus-vl", "v1", "leaky"]  # v2 came from v1, fine-tuned leakily
    both = run_cli("train", *data, "--model", "octopus-vl", "--out", str(tmp_path / "elsewhere"), env=env)
    assert both.returncode == 2 and "give out (a run folder) or model" in both.stderr


def test_predicting_with_a_lab_model_takes_its_latest_version_when_the_job_runs(tmp_path, small_isbi_folders):
    from tests.conftest import run_cli
    from membraind.volumes.image_files import png_text

    em, labels = small_isbi_folders
    env = TINY | {"MEMBRAIND_SERVICE__MODELS_DIR": str(tmp_path / "models")}
    data = ["--em", str(em), "--labels", str(labels), "--mapping", "isbi", "--epochs", "1"]
    predict = ["predict", str(em), "--model", "octopus-vl", "--out", str(tmp_path / "pred"), "--box", "0,192,0,192,0,1"]
    missing = run_cli(*predict, env=env)
    assert missing.returncode == 2 and "lab model 'octopus-vl'" in missing.stderr and "train it first" in missing.stderr
    assert run_cli("train", *data, "--model", "octopus-vl", env=env).returncode == 0
    first = run_cli(*predict, env=env)
    assert first.returncode == 0 and "1 tiles predicted" in first.stdout, first.stderr
    assert run_cli("finetune", *data, "--model", "octopus-vl", env=env).returncode == 0  # v2
    again = run_cli(*predict, env=env)
    assert again.returncode == 0 and "1 tiles predicted, 0 already up to date" in again.stdout, again.stderr
    (tile,) = (tmp_path / "pred" / "octopus-vl" / "membrane" / "mip0").rglob("*.png")
    v2 = load_bundle(tmp_path / "models" / "octopus-vl" / "v2" / "model").metadata
    assert png_text(tile)["membraind-made-by"] == f"octopus-vl v2 (trained {v2.created})"
    pinned = run_cli(*predict[:2], "--model", "octopus-vl@v7", *predict[4:], env=env)
    assert pinned.returncode == 2 and "octopus-vl: v1, v2" in pinned.stderr


def test_a_version_still_training_is_not_the_latest(tmp_path):
    """Its bundle is rewritten after every better epoch: until its training stops (the outcome
    says why), "latest" is the version before it."""
    import json

    from membraind.nn.versions import latest_version

    def version(number: int, outcome: dict | None) -> None:
        bundle = tmp_path / "m" / f"v{number}" / "model"
        bundle.mkdir(parents=True)
        (bundle / "model.json").write_text(json.dumps({"name": "m"} | ({"outcome": outcome} if outcome else {})))

    kept = {"kept_epoch": 1, "kept_val_membrane_f1": 0.5, "last_epoch": 1, "epochs": 3}
    version(1, None)  # imported: no outcome
    version(2, kept | {"stopped": "all-epochs"})
    version(3, kept)  # training (or killed while training): stopped is unset
    assert latest_version(tmp_path, "m").version == 2
    (tmp_path / "m" / "v4").mkdir()  # claimed, no epoch yet
    assert latest_version(tmp_path, "m").version == 2
