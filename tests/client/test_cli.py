"""``membraind-client`` against a real daemon (a subprocess with ipc endpoints), on the
real ISBI data: submit and follow jobs, the queries, cancelling, CurveZMQ keys, and
the exit statuses scripts rely on."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from membraind.harness import wait_until
from tests.conftest import ApiLab
from membraind_client import Client
from membraind_client.cli import UsageError, main, set_fields

pytestmark = pytest.mark.isbi

REPO = Path(__file__).resolve().parents[2]
CLIENT_EXE = Path(sys.executable).with_name("membraind-client")  # the installed console script
TRAIN = {"epochs": 1, "steps_per_epoch": 4, "patch_size": 64, "device": "cpu", "mapping": "isbi"}


def set_options(fields: dict) -> list[str]:
    """``--set=FIELD=VALUE`` options for ``fields`` (text as it is, other values as JSON)."""
    return [f"--set={k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in fields.items()]


class Lab(ApiLab):
    """A daemon (``self.daemon``) with its home, config and ipc endpoints."""

    def __init__(self, tmp: Path, isbi: Path, api: dict | None = None) -> None:
        super().__init__(tmp, isbi, {"service": {"max_attempts": 1, "api": api or {}},
                                     "unet": {"depth": 3, "base_filters": 8}, "training": {"batch_size": 4}})  # fmt: skip
        self.daemon = self.supervised()

    @property
    def options(self) -> list[str]:
        """The global options that reach this daemon."""
        return ["--endpoint", self.endpoint, "--events", self.events]

    def train_options(self, out: str, **fields) -> list[str]:
        """``--kind train --set ...`` for a small CPU training on the ISBI data."""
        spec = {"em": str(self.isbi / "train" / "image"), "labels": str(self.isbi / "train" / "label"),
                "out": str(self.home / out), **TRAIN, **fields}  # fmt: skip
        return ["--kind", "train", *set_options(spec)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, isbi):
    lab = Lab(tmp_path_factory.mktemp("client-cli"), isbi)
    lab.daemon.start()
    try:
        yield lab
    finally:
        lab.daemon.stop()
        lab.daemon.kill()


@pytest.fixture(scope="module")
def done_job(lab) -> str:
    """The id of a segment2d job the daemon has finished."""
    with Client(lab.endpoint, events=lab.events) as client:
        job = client.submit(lab.segment("seg-done", (0, 0)), job_id="seg-done").job
        assert client.wait(job.id, timeout=300).state == "done"
    return job.id


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch):
    for name in ("MEMBRAIND_ENDPOINT", "MEMBRAIND_EVENTS", "MEMBRAIND_SERVER_KEY", "MEMBRAIND_CLIENT_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``membraind-client`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str, str]:
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def one_error_line(err: str) -> str:
    """The single ``membraind-client: error:`` line of ``err`` (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("membraind-client: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_submit_request_file_and_wait_prints_the_outputs(lab, cli):
    request = lab.tmp / "segment.toml"
    request.write_text(f'id = "seg-file"\nkind = "segment2d"\nmembrane = "{lab.isbi}/train/label"\n'
                       f'out = "{lab.home}/seg-file"\nsections = [0, 1]\n')  # fmt: skip
    status, out, err = cli(*lab.options, "submit", request, "--wait")
    assert status == 0, err
    outputs = out.splitlines()  # stdout holds only the output paths
    assert outputs == [f"{lab.home}/seg-file/segmentation/seg-file.vsvi", f"{lab.home}/seg-file/labels.tif",
                       f"{lab.home}/seg-file/preview"]  # fmt: skip
    assert all(Path(p).is_file() for p in outputs[:2]) and len(list(Path(outputs[2]).glob("section_*.png"))) == 2
    assert "job seg-file submitted (segment2d, priority 0)" in err
    assert "seg-file  done      [####################] 100.0%" in err  # the progress line's last state
    assert "job seg-file done in" in err and "2 sections segmented" in err

    status, out, _ = cli(*lab.options, "--json", "status", "seg-file")
    reply = json.loads(out)
    assert status == 0 and reply["type"] == "status" and reply["job"]["state"] == "done"
    assert reply["job"]["source"] == "zmq" and reply["job"]["result"]["outputs"] == outputs
    assert isinstance(reply["epoch"], str) and reply["seq"] == 0  # a finished job's seq is forgotten

    # The same id again is the same job, not a second run.
    status, out, _ = cli(*lab.options, "submit", request)
    assert status == 0 and "job seg-file existed already (same id), not submitted again: done" in out


def test_submit_with_kind_and_set_trains_a_model_the_daemon_then_lists(lab, cli):
    options = lab.train_options("models/tiny", name="tiny-isbi", seed=3)
    status, out, err = cli(*lab.options, "--json", "submit", *options, "--id", "train-tiny", "--priority", "7")
    assert status == 0, err
    submitted = json.loads(out)
    assert submitted["type"] == "submitted" and submitted["created"] is True
    job = submitted["job"]
    assert (job["id"], job["kind"], job["priority"]) == ("train-tiny", "train", 7)
    assert job["spec"]["epochs"] == 1 and job["spec"]["seed"] == 3 and job["spec"]["device"] == "cpu"  # JSON values

    status, out, err = cli(*lab.options, "wait", "train-tiny", "--timeout-wait", "300")
    assert status == 0, err
    assert f"{lab.home}/models/tiny/model" in out.splitlines()

    status, out, _ = cli(*lab.options, "--json", "models")
    (model,) = json.loads(out)["models"]
    assert model["name"] == "tiny-isbi" and model["path"] == f"{lab.home}/models/tiny/model"
    assert model["classes"] and model["mip"] == 0
    status, out, _ = cli(*lab.options, "models")
    assert status == 0 and out.startswith("tiny-isbi") and f"{lab.home}/models/tiny/model" in out


@pytest.mark.parametrize(
    "options, named",
    [
        (["--set", "h=5"], "segment2d.h: Input should be less than or equal to 1"),
        (["--set", "sections=[0, 1, 2]"], "segment2d.sections"),
        (["--set", "out=/elsewhere/seg"], "out: /elsewhere/seg is outside the folders this daemon may use"),
    ],
)
def test_rejected_request_exits_2_naming_the_field(lab, cli, options, named):
    fields = set_options(lab.segment("rejected", (0, 0)))
    status, out, err = cli(*lab.options, "submit", *fields, *options)
    assert status == 2 and out == ""
    line = one_error_line(err)
    assert "the daemon rejected the request" in line and named in line


def test_nested_set_reaches_the_daemon_and_names_the_nested_field(lab, cli):
    status, _, err = cli(*lab.options, "submit", "--kind", "predict", f"--set=volume={lab.isbi}/test/image",
                         f"--set=bundles=[\"{lab.home}/models/none\"]", f"--set=out={lab.home}/pred",
                         "--set", "target.mode=sideways")  # fmt: skip
    assert status == 2
    line = one_error_line(err)
    assert "predict.target" in line and "'sideways'" in line and "'volume', 'box', 'anchors', 'image'" in line


def test_set_values_are_json_when_they_parse_and_dotted_names_nest():
    spec = set_fields({"target": {"mode": "box", "box": {"x0": 0}}}, [
        "sections=[0, 9]", "h=0.05", "overwrite=true", "name=run 3", 'label="3"', "out=/data/lab/x",
        "target.mode=volume", "target.box.mip=1", "extra.deep.field=null",
    ])  # fmt: skip
    assert spec == {
        "target": {"mode": "volume", "box": {"x0": 0, "mip": 1}}, "sections": [0, 9], "h": 0.05, "overwrite": True,
        "name": "run 3", "label": "3", "out": "/data/lab/x", "extra": {"deep": {"field": None}},
    }  # fmt: skip
    with pytest.raises(UsageError, match="h is 0.05, not an object"):
        set_fields({"h": 0.05}, ["h.x=1"])
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(UsageError, match="write FIELD=VALUE"):
            set_fields({}, [bad])


def test_ping_list_and_status_as_json_and_text(lab, cli, done_job):
    status, out, _ = cli(*lab.options, "--json", "ping")
    pong = json.loads(out)
    assert status == 0 and pong["type"] == "pong" and pong["daemon_version"]
    assert pong["counts"]["done"] >= 1
    status, out, _ = cli(*lab.options, "ping")
    assert status == 0 and out.startswith("membraind ") and "done" in out

    status, out, _ = cli(*lab.options, "--json", "list", "--state", "done", "failed", "--limit", "50")
    listed = json.loads(out)
    assert status == 0 and listed["type"] == "jobs"
    assert done_job in {j["id"] for j in listed["jobs"]}
    assert {j["state"] for j in listed["jobs"]} <= {"done", "failed"}
    status, out, _ = cli(*lab.options, "list", "--limit", "1")
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith("jobs: ") and len(lines) == 3
    assert lines[1].split() == ["JOB", "KIND", "STATE", "DONE", "AGE", "MESSAGE"], "every column has a heading"

    status, out, _ = cli(*lab.options, "status", done_job)
    assert status == 0 and f"job       {done_job}\n" in out and "state     done 100%" in out
    assert f"{lab.home}/seg-done/labels.tif" in out


def test_ids_are_shown_whole_and_a_unique_start_of_one_is_taken_back(lab, cli):
    long_id = "prefix-test-a-job-id-longer-than-24-characters"
    with Client(lab.endpoint, events=lab.events) as client:
        for job_id in (long_id, "prefix-test-b"):
            client.submit(lab.segment(job_id, (0, 0)), job_id=job_id)
        for job_id in (long_id, "prefix-test-b"):
            assert client.wait(job_id, timeout=300).state == "done"
    status, out, _ = cli(*lab.options, "list", "--limit", "50")
    assert status == 0 and any(line.startswith(long_id + " ") for line in out.splitlines()), out

    status, out, _ = cli(*lab.options, "status", long_id[:24])  # what the list used to show
    assert status == 0 and f"job       {long_id}\n" in out
    status, out, err = cli(*lab.options, "wait", "prefix-test-a")
    assert status == 0, err
    status, out, _ = cli(*lab.options, "cancel", "prefix-test-b")
    assert status == 0 and out.startswith("job prefix-test-b: done")
    for command in ("status", "cancel", "wait"):
        status, _, err = cli(*lab.options, command, "prefix-test-")
        assert status == 2, command
        assert (f"'prefix-test-' is the start of several job ids ({long_id}, prefix-test-b); give more of the id"
                in one_error_line(err)), command


@pytest.mark.parametrize("command", ["status", "cancel", "wait"])
def test_unknown_job_exits_2(lab, cli, command):
    status, _, err = cli(*lab.options, command, "no-such-job")
    assert status == 2
    assert "no job with id 'no-such-job'" in one_error_line(err)


def test_cancel_a_queued_and_a_running_job_and_wait_reports_how_they_ended(lab, cli):
    long = lab.train_options("train-long", epochs=1000)
    assert cli(*lab.options, "submit", *long, "--id", "train-long")[0] == 0
    with Client(lab.endpoint, events=lab.events) as client:
        wait_until(lambda: client.status("train-long").state == "running", 120, what="train-long to run")
    # The GPU queue runs one job at a time: this one waits behind train-long.
    assert cli(*lab.options, "submit", *lab.train_options("train-queued"), "--id", "train-queued")[0] == 0

    status, _, err = cli(*lab.options, "wait", "train-long", "--timeout-wait", "0.5")
    assert status == 4
    assert "gave up waiting after 0.5 s; job train-long goes on" in one_error_line(err)

    status, out, _ = cli(*lab.options, "--json", "cancel", "train-queued")
    reply = json.loads(out)
    assert status == 0 and reply["type"] == "cancelled" and reply["job"]["state"] == "cancelled"
    status, out, _ = cli(*lab.options, "cancel", "train-long")
    assert status == 0 and "job train-long: cancelling; it stops at its next safe point" in out

    status, out, err = cli(*lab.options, "wait", "train-long", "--timeout-wait", "120")
    assert status == 1, err
    assert out == "" and "job train-long cancelled" in err
    status, _, err = cli(*lab.options, "wait", "train-queued")
    assert status == 1 and "job train-queued cancelled: cancelled before it started" in err


def run_client(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The installed ``membraind-client`` command, as a script would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    return subprocess.run([str(CLIENT_EXE), *argv], capture_output=True, text=True, timeout=timeout, env=env)


def test_exit_statuses_of_the_installed_command(lab, tmp_path):
    done = run_client(*lab.options, "ping")
    assert done.returncode == 0, done.stderr

    missing = lab.home / "no-such-folder"  # inside the roots, so accepted; the run then fails
    failed = run_client(*lab.options, "submit", "--kind", "segment2d", f"--set=membrane={missing}",
                        f"--set=out={lab.home}/seg-failed", "--wait")  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    assert failed.stdout == "" and "failed:" in failed.stderr and "no-such-folder" in failed.stderr

    rejected = run_client(*lab.options, "status", "no-such-job")
    assert rejected.returncode == 2 and rejected.stderr.startswith("membraind-client: error: ")
    usage = run_client(*lab.options, "submit", "--priority", "500")
    assert usage.returncode == 2 and "-100 to 100" in usage.stderr

    started = time.monotonic()
    nobody = run_client("--endpoint", f"ipc://{tmp_path}/nobody.sock", "--timeout", "0.2", "--retries", "1", "ping")
    assert nobody.returncode == 3
    assert time.monotonic() - started < 30  # two tries of 0.2 s, plus starting Python
    assert one_error_line(nobody.stderr).startswith("membraind-client: error: no reply from the daemon")
    assert nobody.stdout == ""


def test_ctrl_c_while_waiting_exits_130_and_the_job_goes_on(lab):
    assert run_client(*lab.options, "submit", *lab.train_options("train-interrupted", epochs=1000),
                      "--id", "train-interrupted").returncode == 0  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    waiting = subprocess.Popen([str(CLIENT_EXE), *lab.options, "wait", "train-interrupted"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first = waiting.stderr.readline()  # the first progress line: it is following the job
        assert first.startswith("train-interrupted"), first
        waiting.send_signal(signal.SIGINT)
        _, rest = waiting.communicate(timeout=60)
    finally:
        waiting.kill()
    assert waiting.returncode == 130, rest
    assert "interrupted; job train-interrupted goes on in the daemon" in rest
    with Client(lab.endpoint, events=lab.events) as client:
        assert not client.status("train-interrupted").final
        client.cancel("train-interrupted")  # leave the GPU queue free


def test_keygen_writes_a_key_pair_and_refuses_to_overwrite(tmp_path, cli):
    status, out, _ = cli("keygen", "anna", "--dir", tmp_path / "keys")
    public, secret = tmp_path / "keys" / "anna.key", tmp_path / "keys" / "anna.key_secret"
    assert status == 0 and public.is_file() and secret.is_file()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text() and "secret-key" in secret.read_text()
    assert "put anna.key into the daemon's authorized_keys folder" in out and str(secret) in out
    status, _, err = cli("keygen", "anna", "--dir", tmp_path / "keys")
    assert status == 2 and "exists already" in one_error_line(err)
    status, _, err = cli("keygen", "../anna", "--dir", tmp_path / "keys")
    assert status == 2 and "a key name is letters" in err


def test_curve_keys_from_keygen_admit_one_client_and_ignore_another(tmp_path, isbi, cli, monkeypatch):
    keys, admitted = tmp_path / "keys", tmp_path / "authorized"
    for name in ("server", "anna", "eve"):
        assert cli("keygen", name, "--dir", keys)[0] == 0
    admitted.mkdir()
    (admitted / "anna.key").write_bytes((keys / "anna.key").read_bytes())
    lab = Lab(tmp_path, isbi, api={"server_key": keys / "server.key_secret", "authorized_keys": admitted})
    lab.daemon.start()
    try:
        monkeypatch.setenv("MEMBRAIND_SERVER_KEY", str(keys / "server.key"))
        monkeypatch.setenv("MEMBRAIND_CLIENT_KEY", str(keys / "anna.key_secret"))
        status, out, err = cli(*lab.options, "--json", "submit", "--kind", "segment2d",
                               f"--set=membrane={isbi}/train/label", f"--set=out={lab.home}/seg", "--set=sections=[0,0]",
                               "--id", "anna-1")  # fmt: skip
        assert status == 0, err
        assert json.loads(out)["job"]["client"].startswith("anna (key ")  # the daemon knows who sent it

        status, _, err = cli(*lab.options, "--timeout", "0.3", "--retries", "1", "--key", keys / "eve.key_secret", "ping")
        assert status == 3 and "authorized_keys" in one_error_line(err)
        monkeypatch.delenv("MEMBRAIND_SERVER_KEY")
        monkeypatch.delenv("MEMBRAIND_CLIENT_KEY")
        status, _, err = cli(*lab.options, "--timeout", "0.3", "--retries", "1", "ping")  # no CurveZMQ at all
        assert status == 3 and "no reply from the daemon" in one_error_line(err)
        status, _, err = cli(*lab.options, "--server-key", keys / "server.key", "--key", keys / "anna.key", "ping")  # the public half
        assert status == 2 and "give the .key_secret file" in one_error_line(err)
    finally:
        lab.daemon.stop()
        lab.daemon.kill()


@pytest.mark.parametrize("document", ["docs/protocol.md", "client/README.md"])
def test_the_example_script_in_the_docs_runs(lab, tmp_path, document):
    (script,) = re.findall(r"```python\n(.*?)```", (REPO / document).read_text(), re.S)
    out = lab.home / f"example-{Path(document).parent.name}"
    for old, new in {
        "tcp://gpu-server.lab:5571": lab.endpoint, "tcp://gpu-server.lab:5572": lab.events, "[100, 199]": "[0, 1]",
        "/data/lab/predictions/hippocampus/membrane-v3/membrane": f"{lab.isbi}/train/label",
        "/data/lab/cells/hippocampus": str(out),
    }.items():  # fmt: skip
        assert old in script, f"the example in {document} no longer holds {old!r}: update this test with it"
        script = script.replace(old, new)
    (tmp_path / "example.py").write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")}
    result = subprocess.run([sys.executable, tmp_path / "example.py"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-3:] == [f"{out}/segmentation/{out.name}.vsvi", f"{out}/labels.tif", f"{out}/preview"]
    assert any("%" in line for line in lines[:-3])  # progress was reported on the way
