"""Service subcommands: serve (the daemon), status (the queue and recent jobs), cancel, keygen."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from membraind.commands import Add
from membraind.config import Settings
from membraind.errors import InputError


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.service.daemon import Daemon

    Daemon(settings).run()
    return 0


def _journal(settings: Settings):
    from membraind.service.daemon import JOURNAL_FILE
    from membraind.service.journal import Journal

    path = settings.service.state_path() / JOURNAL_FILE
    if not path.exists():
        raise InputError(f"no job journal at {path}: the daemon has not run with this configuration yet")
    return Journal(path)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    journal = _journal(settings)
    try:
        if args.job:
            record = journal.get(args.job)
            if record is None:
                raise InputError(f"no job with id {args.job!r}")
            print(record.model_dump_json(indent=2))
            return 0
        counts = journal.counts()
        records = journal.list(limit=args.limit)
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"counts": counts, "jobs": [r.model_dump(mode="json") for r in records]}, indent=2))
        return 0
    order = ("running", "queued", "done", "failed", "cancelled")
    print("jobs: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in order))
    now = time.time()
    for r in records:
        detail = r.error if r.state == "failed" else r.message
        print(f"{r.id[:24]:24s} {r.kind:11s} {r.state:9s} {r.progress * 100:5.1f}% {_age(now - r.created):>5s}  {detail}")
        if r.state == "done" and r.result and args.outputs:
            for path in r.result.outputs:
                print(f"{'':24s}   output: {path}")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    journal = _journal(settings)
    try:
        record = journal.request_cancel(args.job)
    finally:
        journal.close()
    if record is None:
        raise InputError(f"no job with id {args.job!r}; `membraind status` lists the jobs")
    if record.state == "running":
        print(f"job {record.id}: cancelling; it stops at its next safe point (training keeps its checkpoint)")
    else:
        print(f"job {record.id}: {record.state}")
    return 0


def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from membraind_client.keys import KeyFileError, generate_keys

    try:
        public, secret = generate_keys(args.dir, args.name)
    except KeyFileError as exc:
        raise InputError(str(exc)) from None
    print(f"public key:  {public}  (give it out: clients need the server's; the daemon's authorized_keys holds clients')")
    print(f"secret key:  {secret}  (keep it private: [service.api] server_key, or a client's --key)")
    return 0


def register(add: Add) -> None:
    """Add the service subcommands."""
    add("serve", cmd_serve, "run the daemon: watch folders and VAST, queue and run jobs (systemd-ready)")
    p = add("status", cmd_status, "show the job queue and recent jobs (reads the daemon's journal)")
    p.add_argument("job", nargs="?", help="one job id: print everything about it")
    p.add_argument("--limit", type=int, default=20, help="recent jobs to list (default 20)")
    p.add_argument("--outputs", action="store_true", help="list the output paths of finished jobs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("cancel", cmd_cancel, "cancel a queued or running job")
    p.add_argument("job", help="job id")
    p = add("keygen", cmd_keygen, "make a CurveZMQ key pair for the API (the server's or a client's)")
    p.add_argument("name", help="key name, e.g. server, or the user's name (a job records who submitted it)")
    p.add_argument("--dir", type=Path, default=Path("."), help="folder for NAME.key and NAME.key_secret (default: here)")
