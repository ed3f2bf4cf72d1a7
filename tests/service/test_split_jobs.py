"""Volume predictions split into parts of a few sections (scale-out), on real SQLite files
and real image folders: the plan, one job reported to the user, cancel, failure, and a
restart in the middle of splitting. The parts' runs are recorded through the journal as
a worker records them."""

from __future__ import annotations

import numpy as np
import pytest
from membraind_client.progress import Progress

from membraind.config import Settings
from membraind.jobs.execute import JobResult
from membraind.jobs.specs import PredictSpec
from membraind.service.dispatcher import Dispatcher
from membraind.service.job import Job
from membraind.service.journal import SqliteJournal
from membraind.service.queues import JobQueues, open_hueys
from membraind.service.split_jobs import SPLIT_WORKER, part_id, part_ranges, split_prediction
from membraind.volumes.image_files import write_image

W = "host:gpu0"


@pytest.fixture
def volume(tmp_path):
    folder = tmp_path / "home" / "em"
    rng = np.random.default_rng(3)
    for z in range(10):
        write_image(folder / f"{z:02d}.png", rng.integers(0, 255, (64, 96), dtype=np.uint8))
    return folder


def predict(volume, target: dict | None = None, **extra) -> PredictSpec:
    fields = {"volume": str(volume), "bundles": [str(volume.parent / "model")], "out": str(volume.parent / "out")}
    return PredictSpec.model_validate(fields | ({"target": target} if target else {}) | extra)


def box(z0: int, z1: int) -> dict:
    return {"mode": "box", "box": {"x0": 0, "x1": 50, "y0": 0, "y1": 40, "z0": z0, "z1": z1}}


@pytest.fixture
def dispatcher(tmp_path):
    settings = Settings.model_validate({"service": {"home": str(tmp_path / "home"), "queue": {"part_sections": 4}}})
    journal = SqliteJournal(tmp_path / "journal.db")
    dispatcher = Dispatcher(settings.service, settings.transfer, journal, JobQueues(open_hueys(settings.service)))
    yield dispatcher
    journal.close()


def test_the_plan_cuts_whole_volumes_and_boxes_into_parts(volume):
    assert part_ranges(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    parts = split_prediction(predict(volume), 4)
    assert [(p.target.box.z0, p.target.box.z1) for p in parts] == [(0, 4), (4, 8), (8, 10)]
    assert {(p.target.box.x1, p.target.box.y1) for p in parts} == {(96, 64)}, "the whole section"
    parts = split_prediction(predict(volume, box(3, 40)), 4)  # beyond the volume: clipped to its 10 sections
    assert [(p.target.box.z0, p.target.box.z1, p.target.box.x1) for p in parts] == [(3, 7, 50), (7, 10, 50)]
    assert all(p.bundles == parts[0].bundles and p.out == parts[0].out for p in parts)
    assert split_prediction(predict(volume, box(0, 4)), 4) is None, "fits in one part"
    assert split_prediction(predict(volume), 0) is None, "splitting off"
    anchors = {"mode": "anchors", "points": [{"x": 5, "y": 5, "z": 5}], "cube_xy": 16, "cube_z": 8}
    assert split_prediction(predict(volume, anchors), 2) is None
    vast = predict(volume).model_dump(mode="json") | {"volume": {"host": "127.0.0.1", "port": 1, "layer": 0}}
    assert split_prediction(PredictSpec.model_validate(vast), 2) is None, "VAST: not split"
    assert split_prediction(predict(volume.parent / "missing"), 2) is None, "left to the job to report"


def run_part(journal, job_id: str, outputs: list[str], worker: str = W) -> None:
    journal.claim(job_id, worker, 30)
    journal.finish(job_id, JobResult(outputs=outputs, summary="tiles"), worker)


def test_a_split_job_is_one_job_for_the_user(dispatcher, volume):
    journal, seen = dispatcher.journal, []
    dispatcher.add_listener(lambda record: seen.append((record.id, record.state, round(record.progress, 3))))
    parent, created = dispatcher.submit(Job(id="vol", spec=predict(volume)))
    parts = [part_id("vol", i) for i in range(3)]
    assert created and parent.state == "running" and parent.worker == SPLIT_WORKER
    assert "split into 3 jobs of up to 4 sections" in parent.message
    assert [r.id for r in journal.children("vol")] == parts and dispatcher.queues.job_ids() == set(parts)
    assert all(r.parent == "vol" and r.state == "queued" for r in journal.children("vol"))
    assert not dispatcher.submit(Job(id="vol", spec=predict(volume)))[1] and len(journal.children("vol")) == 3

    journal.claim(parts[0], W, 30)
    journal.progress(parts[0], Progress(phase="predicting", fraction=0.5, current=2, total=4, unit="tile", message="tile 2/4"))
    dispatcher.notify(journal.get(parts[0]))  # what the runner (or the change follower) does
    assert journal.get("vol").progress == pytest.approx(0.5 / 3) and "0 of 3 parts done, 1 running" in journal.get("vol").message
    detail = journal.get("vol").progress_detail
    assert (detail.current, detail.total, detail.unit) == (0, 3, "part") and detail.fraction == pytest.approx(0.5 / 3)
    journal.finish(parts[0], JobResult(outputs=["/out/a.vsvi"]), W)
    run_part(journal, parts[1], ["/out/a.vsvi", "/out/b.png"], "host:gpu1")
    dispatcher.notify(journal.get(parts[1]))
    assert journal.get("vol").state == "running" and journal.get("vol").progress == pytest.approx(2 / 3)
    run_part(journal, parts[2], ["/out/a.vsvi"])
    dispatcher.notify(journal.get(parts[2]))
    done = journal.get("vol")
    assert done.state == "done" and done.progress == 1.0
    assert done.result.outputs == ["/out/a.vsvi", "/out/b.png"] and "3 parts of up to 4 sections, run by 2 worker(s)" in done.result.summary
    assert ("vol", "done", 1.0) in seen and [e[3] for e in journal.events("vol")] == ["queued", "running", "done"]


def test_cancelling_a_split_job_cancels_its_parts(dispatcher, volume):
    journal = dispatcher.journal
    dispatcher.submit(Job(id="vol", spec=predict(volume)))
    parts = [part_id("vol", i) for i in range(3)]
    run_part(journal, parts[0], ["/out/a.vsvi"])
    journal.claim(parts[1], W, 30)
    record = dispatcher.cancel("vol")
    assert record.cancel_requested
    assert [journal.get(p).state for p in parts] == ["done", "running", "cancelled"]
    assert journal.cancel_requested(parts[1]), "the running part stops at its next safe point"
    journal.cancelled(parts[1], "cancelled at tile 3", W)
    dispatcher.notify(journal.get(parts[1]))
    assert journal.get("vol").state == "cancelled" and "1 of 3 parts had finished" in journal.get("vol").message


def test_a_part_that_fails_for_good_fails_the_job_once_the_others_end(dispatcher, volume):
    journal = dispatcher.journal
    dispatcher.submit(Job(id="vol", spec=predict(volume)))
    parts = [part_id("vol", i) for i in range(3)]
    journal.claim(parts[1], W, 30)
    journal.fail(parts[1], "section 5 is unreadable", W)
    dispatcher.notify(journal.get(parts[1]))
    assert journal.get("vol").state == "running", "the other parts still run"
    for part in (parts[0], parts[2]):
        run_part(journal, part, ["/out/a.vsvi"])
    assert [r.id for r in dispatcher.splits.settle_all()] == ["vol"], "the periodic settling catches unseen changes"
    failed = journal.get("vol")
    assert failed.state == "failed" and f"1 of 3 parts failed; the first ({parts[1]}): section 5 is unreadable" in failed.error


def test_a_restart_in_the_middle_of_splitting_adds_the_missing_parts(dispatcher, volume):
    journal = dispatcher.journal
    job = Job(id="vol", spec=predict(volume))
    parts = dispatcher.splits.plan(job)
    record, _ = journal.add(job)
    journal.claim("vol", SPLIT_WORKER, 1e9)
    journal.add(parts[0])  # the scheduler died here
    dispatcher.recover("host:serve")
    assert [r.id for r in journal.children("vol")] == [p.id for p in parts]
    assert dispatcher.queues.job_ids() == {p.id for p in parts}
    assert journal.get("vol").state == "running", "the split job itself is never queued or released"


def test_a_split_job_predicts_every_part_with_the_version_latest_at_submit(dispatcher, volume):
    """NAME is settled when a split job is submitted: parts run later (on several workers)
    must not each take whatever version is latest when they start."""
    models = dispatcher.service.models_path()

    def make_version(number: int) -> None:
        (models / "octopus" / f"v{number}" / "model").mkdir(parents=True)
        (models / "octopus" / f"v{number}" / "model" / "model.json").write_text('{"name": "octopus"}')

    make_version(1)
    make_version(2)
    spec = predict(volume, models=["octopus"], bundles=[])
    parent, created = dispatcher.submit(Job(id="vol", spec=spec))
    assert created and parent.job().spec.models == ["octopus@v2"]
    make_version(3)  # lands while the parts wait
    assert [r.job().spec.models for r in dispatcher.journal.children("vol")] == [["octopus@v2"]] * 3
    single = dispatcher.submit(Job(id="one", spec=predict(volume, box(0, 2), models=["octopus"], bundles=[])))[0]
    assert single.job().spec.models == ["octopus"], "a job run whole resolves NAME when it runs"
