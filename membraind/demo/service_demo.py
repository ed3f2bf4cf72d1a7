"""The service demo: membraind as a lab runs it, end to end on generated EM.

1-6. the ground-truth pipeline (generated EM, membrane labels, a partial annotation);
7.   ``membraind serve`` starts on embedded defaults (SQLite journal and queue, local
     folders, CPU when there is no GPU), as systemd would start it;
8.   a request file asks for a training job on the partial annotation;
9.   tiles "arrive from the microscope" in the scope folder and are predicted as they land;
10.  a request file asks for a box prediction;
11.  the jobs are listed with their output paths, and the daemon stops;
12-16. the mEMbrain loop in VAST: the emulator stands in for VAST on a Windows
     workstation (it sees the demo folder as ``Z:\\lab``); a user paints a little, the
     daemon learns version 1 by itself, shows its predictions around two skeleton nodes,
     learns version 2 from more painting and shows it where the user was looking.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from membraind_client.table import job_lines

from membraind.config import Settings
from membraind.daemon_toml import ipc_api, write_daemon_toml
from membraind.demo.pipeline import run_demo

SCOPE_TILES = 4


STEPS = 16


def _step(number: int, text: str) -> None:
    print(f"[{number}/{STEPS}] {text}", flush=True)


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
    print(f"      request files and their status: {requests / 'accepted'}; "
          f"`membraind --config {config} status` lists the jobs")  # fmt: skip
    loop = run_loop_demo(out, Path(gt["EM"]), Path(gt["membrane labels"]), minutes)
    _open_console_hint(config, home)
    return records + loop


def _open_console_hint(config: Path, home: Path) -> None:
    """How to look at the demo's jobs, models and predictions in the lab console."""
    from membraind.console.access import console_url_for_home

    print("\nto look at the results in the lab console (a web page), start the demo's daemon again:")
    print(f"  membraind --config {config} serve")
    print(f"and open {console_url_for_home(home)} in your browser (Ctrl-C in the terminal stops it)")


def run_loop_demo(out: Path, em: Path, labels: Path, minutes: float) -> list:
    """Steps 12-16: the loop, with the emulator as VAST on Windows; returns its jobs' records."""
    from membraind.demo.vast_loop import MODEL, WINDOWS_DRIVE, LoopLab
    from membraind.volumes.image_files import read_image

    truth = np.stack([read_image(path) for path in sorted(labels.glob("*.png"))])
    config = {"training": {"epochs": 8, "steps_per_epoch": 25}}  # patches: the largest that fits the brush strokes
    lab = LoopLab(out / "lab", em, truth, config=config, learn_minutes=max(minutes / 4, 0.1), quiet_seconds=2.0)
    _step(12, f"the loop in VAST: \"VAST on Windows\" (the emulator, seeing {lab.root} as {WINDOWS_DRIVE}) and a daemon "
              f"with learn = true for lab model {MODEL!r} ({lab.root / 'membraind.toml'})")  # fmt: skip
    lab.start_vast()
    try:
        painted = lab.paint([0, 1, 2], seed=0)
        lab.start_daemon()
        _step(13, f"the user paints {painted} voxels of membrane and interior in sections 0-2 and stops; "
                  f"after {lab.quiet_seconds:g} s of quiet the daemon learns version 1 by itself")  # fmt: skip
        v1 = lab.wait_version(1)
        print(f"      {MODEL} v1 ready: {_outcome(v1)}")
        lab.place_nodes([(256, 256, 1), (256, 256, 4)])
        _step(14, "the user places two skeleton nodes; the daemon predicts a cube around each with v1 and loads it into VAST")
        lab.wait_shown(1)
        loaded = [call[1] for call in lab.emulator.calls if call[0] == "LOADLAYER"]
        print(f"      VAST opened {loaded[0]}: {len(lab.shown_tiles())} tiles")
        painted = lab.paint([3, 4], seed=1)
        _step(15, f"the user paints {painted} more voxels in sections 3-4; the daemon learns v2 from v1 and "
                  "predicts the cubes shown again with it")  # fmt: skip
        v2 = lab.wait_version(2)
        print(f"      {MODEL} v2 ready: {_outcome(v2)}")
        lab.wait_shown(2)
        refreshed = sum(call[0] == "REFRESHLAYERREGION" for call in lab.emulator.calls)
        print(f"      the layer in VAST was refreshed ({refreshed} refreshes, loaded once): the user sees v2 where they looked")
        _step(16, f"the versions, as `membraind --config {lab.root / 'membraind.toml'} models` lists them")
        for version in lab.versions():
            record = version.record()
            painted = (record.get("ground_truth") or {}).get("painted_voxels", 0)
            print(f"      v{version.version}: learned from {painted} painted voxels, {_outcome(version)}")
        records = lab.jobs()
        lab.daemon.stop()
    finally:
        lab.close()
    print(f"\nthe loop's files: {lab.root} (predictions in {lab.out}, versions in {lab.models})")
    return records


def _outcome(version) -> str:
    outcome = version.record().get("outcome") or {}
    return f"validation membrane F1 {outcome.get('kept_val_membrane_f1', 0):.2f}"
