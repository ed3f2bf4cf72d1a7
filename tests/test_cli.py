"""The membraind command line, run as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from membraind.cli import build_parser
from membraind.volumes.image_files import read_image, write_image
from tests.conftest import run_cli

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: membraind {command}" in result.stdout


def test_top_level_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command in result.stdout


def test_convert_instances_then_skeleton(tmp_path):
    ids = np.zeros((60, 80), np.uint16)
    ids[:, :40], ids[:, 40:] = 1, 2
    ids[20:30, 10:20] = 0  # a gap of extracellular space
    write_image(tmp_path / "inst" / "s1.png", ids)
    result = run_cli("convert-instances", str(tmp_path / "inst"), str(tmp_path / "memb"), "--thickness", "3")
    assert result.returncode == 0, result.stderr
    membrane = read_image(tmp_path / "memb" / "s1.png")
    assert set(np.unique(membrane[:, 39:41])) == {2}
    assert membrane[25, 15] == 0  # the gap stays unannotated without --fill-ecs
    assert membrane[5, 5] == 1

    result = run_cli("convert-skeleton", str(tmp_path / "memb"), str(tmp_path / "skel"), "--mapping", "classes")
    assert result.returncode == 0, result.stderr
    skeleton = read_image(tmp_path / "skel" / "s1.png")
    assert skeleton[25, 15] == 0 and skeleton[:, 39:41].max() == 1
    assert (skeleton[:, :38] == 2).any() and (skeleton[:, 42:] == 2).any()


def test_preview_patches_writes_sheet_and_exports(tmp_path, isbi):
    result = run_cli(
        "preview-patches",
        "--em", str(isbi / "train" / "image"),
        "--labels", str(isbi / "train" / "label"),
        "--mapping", "isbi",
        "--patch-size", "64",
        "--count", "10",
        "--columns", "5",
        "--out", str(tmp_path / "sheet.png"),
        "--export", str(tmp_path / "patches"),
    )
    assert result.returncode == 0, result.stderr
    sheet = read_image(tmp_path / "sheet.png")
    assert sheet.shape == (2 * 68 + 4, 5 * 68 + 4, 3)
    labels = sorted((tmp_path / "patches" / "labels").iterdir())
    assert len(labels) == 10 == len(list((tmp_path / "patches" / "em").iterdir()))
    # mEMbrain's patch convention: interior 0, membrane 255, nothing else.
    assert set(np.unique(read_image(labels[0]))) <= {0, 255}


def test_demo_runs_end_to_end(tmp_path):
    result = run_cli("demo-groundtruth", "--out", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    sheet = read_image(tmp_path / "demo" / "preview" / "patches.png")
    assert sheet.ndim == 3 and sheet.shape[0] > 128
    for folder in ("data/em", "data/instances", "groundtruth/membrane", "groundtruth/skeleton", "groundtruth/partial"):
        assert len(list((tmp_path / "demo" / folder).iterdir())) == 8, folder
    assert "agreement with the generator's exact membranes" in result.stdout


def test_service_demo_runs_the_daemon_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--minutes", "0.1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 of 4 tiles predicted as they landed" in result.stdout
    for name in ("train-demo.json", "box-demo.json"):
        status = json.loads((out / "home" / "requests" / "accepted" / f"{name}.status.json").read_text())
        assert status["state"] == "done", status
        assert all(Path(p).exists() for p in status["result"]["outputs"])
    # The train job's summary says why training stopped and which epoch the bundle holds, as the bundle records it.
    from membraind.nn.bundle import read_metadata

    outcome = read_metadata(out / "home" / "runs" / "demo" / "model").outcome
    summary = json.loads((out / "home" / "requests" / "accepted" / "train-demo.json.status.json").read_text())["result"]["summary"]
    assert outcome.stopped is not None and summary.startswith(outcome.describe() + "; model bundle: "), summary
    tiles = sorted((out / "home" / "scope-predictions").rglob("tile_*.png"))
    assert [t.name for t in tiles] == [f"tile_{i:03d}.png" for i in range(4)]
    # the loop: two versions learned from painting in "VAST on Windows", shown where the nodes are
    assert "loop v2 ready" in result.stdout and "the layer in VAST was refreshed" in result.stdout
    assert "VAST opened Z:\\lab\\predictions\\" in result.stdout
    versions = sorted(p.name for p in (out / "lab" / "membraind" / "models" / "loop").iterdir())
    assert versions == ["v1", "v2"]
    # and how to look at it all in the console
    token = (out / "home" / "console-token").read_text().strip()
    assert f"membraind --config {out.resolve() / 'membraind.toml'} serve" in result.stdout
    assert f"?token={token}" in result.stdout


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path):
    """`membraind status --json | head -1`: no BrokenPipe traceback, the status of a process ended by SIGPIPE."""
    import os
    import subprocess
    import sys

    from membraind.jobs.specs import ExportOnnxSpec
    from membraind.service.job import Job
    from membraind.service.journal import SqliteJournal

    home = tmp_path / "home"
    journal = SqliteJournal(home / "state" / "journal.db")
    for i in range(300):  # about 150 kB of JSON: more than a pipe holds, so the writer meets the closed end
        journal.add(Job(id=f"job-{i}", spec=ExportOnnxSpec(bundle=home / "models" / f"m{i}")))
    journal.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMBRAIND_")} | {"MEMBRAIND_SERVICE__HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "membraind", "status", "--json", "--limit", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    first = process.stdout.readline()  # head -1
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, stderr[-3000:]
    assert first == b"{\n" and stderr == ""


def test_status_and_cancel_show_whole_ids_and_take_a_unique_start_of_one(tmp_path):
    from membraind.jobs.specs import ExportOnnxSpec
    from membraind.service.job import Job
    from membraind.service.journal import SqliteJournal

    home = tmp_path / "home"
    journal = SqliteJournal(home / "state" / "journal.db")
    long_id = "scope-d715e51df35b622c7f0a9c3e11b2"  # longer than the 24 characters shown before
    for job_id in (long_id, "scope-d7aa"):
        journal.add(Job(id=job_id, spec=ExportOnnxSpec(bundle=home / "models" / job_id)))
    journal.close()
    env = {"MEMBRAIND_SERVICE__HOME": str(home)}
    listed = run_cli("status", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[1].split() == ["JOB", "KIND", "STATE", "DONE", "AGE", "MESSAGE"], "every column has a heading"
    assert any(line.startswith(long_id + " ") for line in lines), listed.stdout

    shown = run_cli("status", long_id[:24], env=env)  # what the list used to show
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == long_id
    cancelled = run_cli("cancel", "scope-d71", env=env)
    assert cancelled.returncode == 0 and cancelled.stdout == f"job {long_id}: cancelled\n", cancelled.stderr
    both = run_cli("cancel", "scope-d7", env=env)
    assert both.returncode == 2 and both.stdout == ""
    assert f"'scope-d7' is the start of several job ids ({long_id}, scope-d7aa); give more of the id" in both.stderr


def test_status_without_a_journal_says_to_name_the_configuration(tmp_path):
    result = run_cli("status", env={"MEMBRAIND_SERVICE__HOME": str(tmp_path / "home")})
    assert result.returncode == 2 and result.stdout == ""
    assert f"no job journal at {tmp_path / 'home' / 'state'}" in result.stderr
    assert "name it: membraind --config FILE status (or set MEMBRAIND_CONFIG=FILE)" in result.stderr
