"""The service demo: membraind as a lab runs it, end to end on generated EM.

1-6. the ground-truth pipeline (generated EM, membrane labels, a partial annotation);
7.   ``membraind serve`` starts on embedded defaults (SQLite journal and queue, local
     folders, CPU when there is no GPU), as systemd would start it;
8.   a request file asks for a training job on the partial annotation;
9.   tiles "arrive from the microscope" in the scope folder and are predicted as they land;
10.  a request file asks for a box prediction;
11.  the jobs are listed with their output paths, and the daemon stops.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from membraind_client.table import job_lines

from membraind.config import Settings
from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.demo.pipeline import run_demo

SCOPE_TILES = 4


def _step(number: int, text: str) -> None:
    print(f"[{number}/11] {text}", flush=True)


def api_table(out: Path) -> dict[str, str]:
    """The demo daemon's ``[service.api]``: sockets in ``out`` (TCP ports 5581 and 5582 when the path is too long)."""
    if len(str(out)) < 80:
        return ipc_api(out)
    return {"endpoint": "tcp://127.0.0.1:5581", "events": "tcp://127.0.0.1:5582"}


def _config(out: Path, home: Path, bundle: Path) -> Path:
    config = {
        "service": {
            "home": home,
            "roots": [out],
            "api": api_table(out),
            "scope": [{"folder": home / "scope", "out": home / "scope-predictions", "bundles": [bundle]}],
        },
        "predict": {"tile_size": 512},
    }
    return write_daemon_toml(
        out / "membraind.toml", config,
        comment="written by `membraind demo`: the embedded defaults plus the demo's folders\n"
        "and a private API socket, so the demo runs beside a real daemon",
    )  # fmt: skip


def _drop(folder: Path, name: str, request: dict) -> None:
    """Write a request file the safe way: under a hidden name, then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{name}.part"
    staged.write_text(json.dumps(request, indent=2))
    os.replace(staged, folder / name)


def _follow(journal, job_id: str, timeout: float = 1800.0):
    """Show a job's progress until it ends; returns its record."""
    from membraind_client.progress import Progress

    from membraind.commands import progress_bar

    progress, close = progress_bar()
    deadline = time.monotonic() + timeout
    last = None
    try:
        while time.monotonic() < deadline:
            record = journal.get(job_id)
            if record is not None and (record.progress, record.message) != last:
                last = (record.progress, record.message)
                if record.state == "running":  # before its first report: 'started', 'cancelling' as a line of its own
                    progress(record.progress_detail or Progress(phase=record.state, fraction=record.progress,
                                                                message=record.message, milestone=True))  # fmt: skip
            if record is not None and record.final:
                return record
            time.sleep(0.5)
    finally:
        close()
    raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f} s")


def run_service_demo(out: Path, settings: Settings, minutes: float = 1.0, seed: int = 0) -> list:
    """Run the demo into ``out``; returns the journal records of its jobs."""
    from membraind.service.journal import SqliteJournal
    from membraind.harness import SupervisedDaemon

    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    gt = run_demo(out, settings, seed=seed)
    home = out / "home"
    run = home / "runs" / "demo"
    config = _config(out, home, run / "model")

    _step(7, f"starting the daemon (membraind --config {config} serve); log: {out / 'daemon.log'}")
    with SupervisedDaemon(config, out / "daemon.log") as daemon:
        journal = SqliteJournal(home / "state" / "journal.db")
        print(f"      ready (pid {daemon.process.pid}); state in {home / 'state'}")
        requests = home / "requests"

        _step(8, f"request file: train a network on the partial annotation ({minutes:g} min budget)")
        _drop(requests, "train-demo.json", {
            "id": "train-demo", "kind": "train", "em": str(gt["EM"]), "labels": str(gt["partial labels"]),
            "out": str(run), "max_minutes": minutes, "epochs": 8, "steps_per_epoch": 25, "patch_size": 128,
        })  # fmt: skip
        record = _follow(journal, "train-demo")
        print(f"      {record.state}: {record.error or record.message}")

        _step(9, f"{SCOPE_TILES} tiles arrive from the microscope in {home / 'scope'}")
        sections = sorted(Path(gt["EM"]).glob("*.png"))[:SCOPE_TILES]
        for i, section in enumerate(sections):
            target = home / "scope" / "acquisition-1" / f"tile_{i:03d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(section, target.with_name(".part"))
            os.replace(target.with_name(".part"), target)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            scope_jobs = [r for r in journal.list(limit=None) if r.source == "scope"]
            if len(scope_jobs) == SCOPE_TILES and all(r.final for r in scope_jobs):
                break
            time.sleep(0.2)
        print(f"      {sum(r.state == 'done' for r in scope_jobs)} of {SCOPE_TILES} tiles predicted as they landed")

        _step(10, "request file: predict a box (x 0-256, y 0-256, sections 0-3) of the EM stack")
        _drop(requests, "box-demo.json", {
            "id": "box-demo", "kind": "predict", "volume": str(gt["EM"]), "bundles": [str(run / "model")],
            "out": str(home / "box-predictions"),
            "target": {"mode": "box", "box": {"x0": 0, "x1": 256, "y0": 0, "y1": 256, "z0": 0, "z1": 4}},
        })  # fmt: skip
        _follow(journal, "box-demo")

        _step(11, "the jobs and their results")
        records = journal.list(limit=None, oldest_first=True)
        for line in job_lines(records, time.time(), outputs=True):
            print(f"  {line}")  # as `membraind status --outputs` shows them
        journal.close()
        daemon.stop()
    print(f"\nrequest files and their status: {requests / 'accepted'}; `membraind --config {config} status` lists the jobs")
    return records
