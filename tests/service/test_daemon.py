"""The daemon as a real process: signals, restarts, the engine process, the request
folder and the scope folder, with the real ISBI data and a small trained network."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.service.journal import SqliteJournal
from membraind import harness
from membraind.harness import SupervisedDaemon

pytestmark = pytest.mark.isbi

# A small CPU training that runs until it is stopped: tests cancel or kill it.
ENDLESS_TRAINING = {
    "unet": {"depth": 3, "base_filters": 8},
    "training": {"steps_per_epoch": 4, "batch_size": 4, "epochs": 1000, "device": "cpu"},
    "sampler": {"patch_size": 64},
}


def wait_until(predicate, timeout: float = 120.0, what: str = "condition", daemon: SupervisedDaemon | None = None):
    """Poll ``predicate`` until it returns something truthy (returned), or fail saying ``what``."""
    try:
        return harness.wait_until(predicate, timeout, what=what)
    except TimeoutError as exc:
        tail = f"\ndaemon log:\n{daemon.log_tail()}" if daemon else ""
        pytest.fail(f"{exc}{tail}")


class Lab:
    """A daemon home with a config: scope folder, request folder, outputs."""

    def __init__(self, tmp: Path, bundle: Path, isbi: Path, config: dict | None = None) -> None:
        """``config`` (the configuration file's shape) is laid over the lab's base configuration."""
        self.home, self.bundle, self.isbi = tmp / "home", bundle, isbi
        self.scope, self.scope_out = self.home / "scope", self.home / "scope-out"
        self.requests = self.home / "requests"
        api = ipc_api(tmp)
        self.api_endpoint, self.events_endpoint = api["endpoint"], api["events"]
        base = {
            "service": {
                "home": self.home, "roots": [bundle.parent, isbi], "retry_delay_seconds": 0.2, "api": api,
                "scope": [{"folder": self.scope, "out": self.scope_out, "bundles": [bundle], "stable_seconds": 0.5}],
            },
            "predict": {"device": "cpu", "runtime": "torch"},
        }  # fmt: skip
        self.config = write_daemon_toml(tmp / "membraind.toml", base, config or {})
        self.log = tmp / "daemon.log"

    def daemon(self) -> SupervisedDaemon:
        return SupervisedDaemon(self.config, self.log)

    def journal(self) -> SqliteJournal:
        return SqliteJournal(self.home / "state" / "journal.db")

    def records(self, **kw):
        journal = self.journal()
        try:
            return journal.list(limit=None, **kw)
        finally:
            journal.close()

    def events(self, job_id: str | None = None):
        journal = self.journal()
        try:
            return journal.events(job_id)
        finally:
            journal.close()

    def drop_tile(self, name: str, section: int = 0, repeat: int = 1) -> Path:
        """Copy an ISBI test section into the scope folder (written, then renamed into place);
        ``repeat`` > 1 tiles it ``repeat`` x ``repeat`` times, for a job that runs long enough to be caught running."""
        target = self.scope / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name("." + target.name + ".part")
        source = self.isbi / "test" / "image" / f"{section:02d}.png"
        if repeat == 1:
            shutil.copy(source, tmp)
        else:
            Image.fromarray(np.tile(np.asarray(Image.open(source)), (repeat, repeat))).save(tmp, format="PNG")
        os.rename(tmp, target)
        return target

    def drop_request(self, name: str, request: dict) -> Path:
        self.requests.mkdir(parents=True, exist_ok=True)
        tmp = self.requests / f".{name}.part"
        tmp.write_text(json.dumps(request))
        os.rename(tmp, self.requests / name)
        return self.requests / "accepted" / name


def state_of(lab: Lab, job_id: str) -> str | None:
    journal = lab.journal()
    try:
        record = journal.get(job_id)
    finally:
        journal.close()
    return record.state if record else None


def all_done(lab: Lab, count: int) -> bool:
    records = lab.records()
    return len(records) == count and all(r.state == "done" for r in records)


def hidden_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


def test_sigkill_while_jobs_run_then_restart_completes_each_job_once(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi, {"predict": {"tile_size": 128, "context": 32}})
    tiles = [lab.drop_tile(f"run1/tile_{i}.png", i) for i in range(5)]  # 16 network tiles each
    daemon = lab.daemon().start()
    try:
        wait_until(lambda: any(r.state == "running" for r in lab.records()) and any(r.state == "done" for r in lab.records()),
                   what="one scope job done and one running", daemon=daemon)  # fmt: skip
        engines = daemon.engines()
        assert engines, "the daemon should have spawned an engine process"
    finally:
        daemon.kill()
    interrupted = [r.id for r in lab.records() if r.state == "running"]
    assert interrupted
    # The engine notices its daemon is gone and exits rather than write on unrecorded.
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in engines), 60, "the orphaned engine to exit")

    with lab.daemon() as daemon:
        wait_until(lambda: all_done(lab, len(tiles)), what="every scope job done after the restart", daemon=daemon)
    for record in lab.records():
        done_events = [e for e in lab.events(record.id) if e[3] == "done"]
        assert len(done_events) == 1, f"job {record.id} completed {len(done_events)} times"
        (output,) = record.result.outputs
        with Image.open(output) as image:
            assert image.size == (512, 512)
            assert np.asarray(image).std() > 10  # a real prediction, not an empty tile
    assert {r.id: r.attempts for r in lab.records() if r.id in interrupted} == {i: 2 for i in interrupted}
    assert hidden_files(lab.scope_out) == []  # no half-written temporary files left


def test_sigterm_finishes_the_running_tile_and_requeues_the_rest(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi, {"predict": {"tile_size": 128, "context": 32, "pyramid": False}})
    out = lab.home / "box-out"
    request = {
        "id": "box-1", "kind": "predict", "volume": str(isbi / "test" / "image"), "bundles": [str(trained_bundle)],
        "out": str(out), "target": {"mode": "box", "box": {"x0": 0, "x1": 512, "y0": 0, "y1": 512, "z0": 0, "z1": 30}},
    }  # fmt: skip
    daemon = lab.daemon().start()
    try:
        lab.drop_request("box.json", request)
        wait_until(lambda: (r := lab.journal().get("box-1")) and r.state == "running" and r.progress > 0.1,
                   what="the box job to be under way", daemon=daemon)  # fmt: skip
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(120) == 0
    finally:
        daemon.kill()
    assert "STOPPING=1" in "\n".join(daemon.notifications)
    (record,) = lab.records()
    assert record.state == "queued" and record.attempts == 0  # a stop is not a failed attempt
    assert [e[3] for e in lab.events("box-1")] == ["queued", "running", "queued"]
    total = 30 * 16  # sections x 128-pixel tiles
    written = sorted(out.rglob("mip0/*/*.png"))
    assert 0 < len(written) < total, f"{len(written)} of {total} tiles written before the stop"
    for tile in written:  # each finished tile is whole
        with Image.open(tile) as image:
            image.load()
    assert hidden_files(out) == []
    status_file = lab.requests / "accepted" / "box.json.status.json"
    status = json.loads(status_file.read_text())
    assert status["state"] == "queued" and "interrupted by a stop" in status["message"]

    with lab.daemon() as daemon:
        # The status file, what the user reads, is written just after the journal: wait for it.
        wait_until(lambda: json.loads(status_file.read_text())["state"] == "done",
                   what="the box job's status file to say done after the restart", daemon=daemon)  # fmt: skip
    (record,) = lab.records()
    assert record.state == "done"
    assert f"{total - len(written)} tiles predicted, {len(written)} already up to date" in record.result.summary
    assert json.loads(status_file.read_text())["result"]["outputs"] == record.result.outputs


def test_tile_written_slowly_in_chunks_is_predicted_once_after_it_is_complete(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi)
    data = (isbi / "test" / "image" / "03.png").read_bytes()
    target = lab.scope / "slow" / "tile.png"
    target.parent.mkdir(parents=True)
    with lab.daemon() as daemon:
        chunks = np.array_split(np.frombuffer(data, np.uint8), 6)
        for chunk in chunks:  # a slow writer: open, append, close, pause
            with open(target, "ab") as f:
                f.write(chunk.tobytes())
            last_write = time.time()
            time.sleep(0.4)  # the writer's pace, not synchronisation
        (record,) = wait_until(lambda: [r for r in lab.records() if r.state == "done"], what="the tile's job", daemon=daemon)
    assert len(lab.records()) == 1
    assert record.created >= last_write - 0.05  # not submitted before the last chunk landed
    assert record.attempts == 1
    with Image.open(record.result.outputs[0]) as image:
        assert image.size == (512, 512)


def test_second_daemon_on_the_same_state_folder_refuses_to_start(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi)
    with lab.daemon() as first:
        second = run_cli("--config", str(lab.config), "serve")
        assert second.returncode == 2
        assert "another membraind daemon" in second.stderr and str(first.process.pid) in second.stderr
        assert first.process.poll() is None


def test_engine_crash_and_hang_are_retried_and_the_daemon_stays_up(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi, {"predict": {"tile_size": 128, "context": 32}, "service": {"hang_seconds": 20}})
    with lab.daemon() as daemon:
        lab.drop_tile("a/crash.png", 5, repeat=4)  # 256 tiles: seconds of work, long enough to be seen running
        (record,) = wait_until(lambda: [r for r in lab.records() if r.state == "running" and r.progress > 0],
                               what="the job to run", daemon=daemon)  # fmt: skip
        (engine,) = daemon.engines()
        os.kill(engine, signal.SIGKILL)  # the engine dies mid-job (as if out of memory)
        wait_until(lambda: state_of(lab, record.id) == "done", what="the crashed job to be retried", daemon=daemon)

        lab.drop_tile("a/hang.png", 6, repeat=4)
        (hung,) = wait_until(lambda: [r for r in lab.records() if r.state == "running" and r.progress > 0],
                             what="the second job to run", daemon=daemon)  # fmt: skip
        (engine,) = daemon.engines()
        os.kill(engine, signal.SIGSTOP)  # the engine hangs
        wait_until(lambda: state_of(lab, hung.id) == "done", what="the hung job to be killed and retried", daemon=daemon)
        assert daemon.process.poll() is None
    by_id = {r.id: r for r in lab.records()}
    assert by_id[record.id].attempts == 2 and by_id[hung.id].attempts == 2
    details = " ".join(e[5] for e in lab.events())
    assert "engine process died" in details and "no progress" in details


def test_cancel_stops_running_training_and_keeps_its_checkpoint(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi, ENDLESS_TRAINING)
    run = lab.home / "train-run"
    request = {"id": "train-1", "kind": "train", "em": str(isbi / "train" / "image"), "labels": str(isbi / "train" / "label"),
               "mapping": "isbi", "out": str(run)}  # fmt: skip
    with lab.daemon() as daemon:
        lab.drop_request("train.json", request)
        wait_until(lambda: (run / "checkpoint.pt").exists(), what="a first epoch checkpoint", daemon=daemon)
        result = run_cli("--config", str(lab.config), "cancel", "train-1")
        assert result.returncode == 0, result.stderr
        asked = time.monotonic()
        wait_until(lambda: state_of(lab, "train-1") == "cancelled", 60, "the training to stop", daemon)
        assert time.monotonic() - asked < 30
    assert (run / "checkpoint.pt").exists() and (run / "history.csv").exists()
    status = run_cli("--config", str(lab.config), "status")
    assert "train-1" in status.stdout and "cancelled" in status.stdout


def test_bad_requests_are_rejected_and_the_daemon_keeps_serving(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi)
    outside = {"kind": "export-onnx", "bundle": str(trained_bundle), "out": str(tmp_path / "elsewhere" / "m.onnx")}
    good = {"kind": "export-onnx", "bundle": str(trained_bundle), "out": str(lab.home / "exports" / "m.onnx")}
    with lab.daemon() as daemon:
        lab.drop_request("outside.json", outside)
        for i, text in enumerate(["{", "[]", '{"kind": 3}', "\xff\xfe", '{"kind": "predict"}']):
            (lab.requests / f"bad{i}.json").write_text(text, errors="surrogateescape")
        lab.drop_request("good.json", good)
        wait_until(lambda: len(list((lab.requests / "rejected").glob("*.error.txt"))) == 6, what="six rejections", daemon=daemon)
        (record,) = wait_until(lambda: [r for r in lab.records() if r.state == "done"], what="the good job", daemon=daemon)
        assert daemon.process.poll() is None
    error = (lab.requests / "rejected" / "outside.json.error.txt").read_text()
    assert "out:" in error and "outside the folders" in error
    assert Path(record.result.outputs[0]).is_file()
    assert not (tmp_path / "elsewhere").exists()


def history_rows(run: Path) -> list[list[str]]:
    """The epochs of a training run's history.csv (replaced atomically, so never half read)."""
    try:
        lines = (run / "history.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return []
    return [line.split(",") for line in lines]


def test_restart_starts_a_run_over_only_once_and_a_retry_resumes_it(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi, ENDLESS_TRAINING)
    run = lab.home / "train-run"
    request = {"id": "train-over", "kind": "train", "em": str(isbi / "train" / "image"),
               "labels": str(isbi / "train" / "label"), "mapping": "isbi", "out": str(run), "restart": True}  # fmt: skip
    with lab.daemon() as daemon:
        lab.drop_request("train.json", request)
        wait_until(lambda: len(history_rows(run)) >= 2, what="two epochs (the first one's checkpoint kept)", daemon=daemon)
        first_epoch = history_rows(run)[0]
        (engine,) = daemon.engines()
        os.kill(engine, signal.SIGKILL)  # the engine dies mid-run (as if out of memory): the job is retried
        wait_until(lambda: any("engine process died" in e[5] for e in lab.events("train-over")),
                   what="the crash to be recorded", daemon=daemon)  # fmt: skip
        epochs_then = len(history_rows(run))
        seen: list[int] = []  # the history's length at every look: started over, it drops to one epoch
        wait_until(lambda: seen.append(len(history_rows(run))) or seen[-1] > epochs_then, what="an epoch of the retry",
                   daemon=daemon)  # fmt: skip
        assert min(seen) >= epochs_then, f"the history shrank to {min(seen)} epochs: the run started over"
        # Resumed: the first epoch is the one trained before the crash. Started over, it would
        # have been trained again (and taken another number of seconds).
        assert history_rows(run)[0] == first_epoch
    record = lab.journal().get("train-over")
    assert record.attempts == 2 and record.spec["restart"] is True


def test_sigterm_while_the_engine_starts_stops_at_once(tmp_path, trained_bundle, isbi):
    lab = Lab(tmp_path, trained_bundle, isbi)
    daemon = lab.daemon().start(until="loading the engine")  # the status sent just before the engine starts
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(120) == 0, daemon.log_tail()
    assert time.monotonic() - started < 60, "the stop waited for the engine's start timeout"
    assert not any("READY=1" in n for n in daemon.notifications), "it never claimed to be ready"
    assert "stopped" in daemon.log_tail()


def test_the_log_and_the_ready_status_say_on_which_device_models_run(tmp_path, isbi):
    """The gpu queue's engine names the device it found (not the queue's name), here and on a GPU host alike."""
    import torch

    from tests.conftest import ApiLab

    expected = f"cuda:0 ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu (no CUDA device)"
    lab = ApiLab(tmp_path, isbi)
    with lab.supervised() as daemon:
        (ready,) = [n for n in daemon.notifications if "READY=1" in n]
    log = lab.log.read_text()
    assert re.search(rf"engine process for the gpu queue ready \(pid \d+\): models run on {re.escape(expected)}\n", log), log
    assert ready.endswith(f"; models run on {expected}"), ready
    assert "gpu engine process ready" not in log


def test_jobs_run_by_sqlite_workers_keep_status_files_and_api_events_current(tmp_path, trained_bundle, isbi):
    """serve_runs_jobs = false: `membraind worker` processes on the host run the jobs; serve
    must still hear of every change they make (status files, the API's events)."""
    from membraind_client.client import Client

    from membraind.service.runner import worker_name

    lab = Lab(tmp_path, trained_bundle, isbi, {"service": {"queue": {"serve_runs_jobs": False}}})
    worker = SupervisedDaemon(lab.config, tmp_path / "worker.log", command=["worker", "--cpu", "--name", "w0"])
    with lab.daemon() as serve, worker:
        lab.drop_request("onnx.json", {"id": "file-1", "kind": "export-onnx", "bundle": str(trained_bundle),
                                       "out": str(lab.home / "file.onnx")})  # fmt: skip
        status_file = lab.requests / "accepted" / "onnx.json.status.json"
        wait_until(lambda: status_file.exists() and json.loads(status_file.read_text())["state"] == "done",
                   what="the request's status file to follow its job to the end", daemon=serve)  # fmt: skip
        with Client(lab.api_endpoint, events=lab.events_endpoint) as client:
            client.submit({"kind": "export-onnx", "bundle": str(trained_bundle), "out": str(lab.home / "api.onnx")},
                          job_id="api-1")  # fmt: skip
            # No resynchronisation by status: only the event stream can bring the job's end.
            final = client.wait("api-1", timeout=120, resync_seconds=3600)
    assert final.state == "done" and final.worker == worker_name("w0")
    (ready,) = [n for n in worker.notifications if "READY=1" in n]
    assert ready.endswith("; models run on cpu (no CUDA device)"), ready  # --cpu hides every GPU from its engines
    status = json.loads(status_file.read_text())
    assert status["result"]["outputs"] == [str(lab.home / "file.onnx")] and status["worker"] == worker_name("w0")
