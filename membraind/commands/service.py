"""Service subcommands: serve (the daemon), status (the queue and recent jobs), cancel, keygen."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from membraind_client.table import counts_line, job_lines

from membraind.commands import Add
from membraind.config import Settings
from membraind.errors import InputError, MembraindError
from membraind.service.settings import ServiceSettings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.service.daemon import Daemon

    Daemon(settings).run()
    return 0


def _journal(service: ServiceSettings):
    from membraind.service.journal import JOURNAL_FILE, journal_name, open_journal

    path = service.state_path() / JOURNAL_FILE
    if service.queue.backend == "sqlite" and not path.exists():
        raise InputError(f"no job journal at {path}: no daemon has run with this configuration yet; if yours runs with "
                         "another, name it: membraind --config FILE status (or set MEMBRAIND_CONFIG=FILE)")  # fmt: skip
    journal = open_journal(service)
    try:
        journal.check()
    except MembraindError:
        journal.close()
        raise
    except Exception as exc:  # Redis down: say where and why, not a traceback
        journal.close()
        raise InputError(f"cannot read {journal_name(service)} ({type(exc).__name__}: {exc}); check that it runs and "
                         "[service.queue] redis_url") from None  # fmt: skip
    return journal


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.service.worker import WorkerService, restrict_to_gpu

    if args.gpu is not None and args.cpu:
        raise InputError("give --gpu N or --cpu, not both")
    if args.gpu is not None and args.gpu < 0:
        raise InputError(f"--gpu {args.gpu}: a GPU index is 0 or more (nvidia-smi lists them)")
    if args.gpu is not None or args.cpu:
        restrict_to_gpu(None if args.cpu else args.gpu)
    role = args.name or (f"gpu{args.gpu}" if args.gpu is not None else "cpu" if args.cpu else "worker")
    queues = tuple(dict.fromkeys(q.strip() for q in args.queues.split(",") if q.strip()))
    unknown = [q for q in queues if q not in ("gpu", "cpu")]
    if unknown or not queues:
        raise InputError(f"--queues {args.queues!r}: name gpu, cpu or both (gpu,cpu)")
    WorkerService(settings, role, queues).run()
    return 0


def cmd_secret(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.service.queue_messages import write_secret

    write_secret(args.file)
    print(f"wrote a new queue secret to {args.file} (readable by its owner only); copy it to every host of the "
          "cluster and name it in [service.queue] secret_file")  # fmt: skip
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    journal = _journal(settings.service)
    try:
        if args.job:
            record = journal.find(args.job)
            if record is None:
                raise InputError(f"no job with id {args.job!r}; `membraind status` lists the jobs")
            print(record.model_dump_json(indent=2))
            return 0
        counts = journal.counts()
        records = journal.list(limit=args.limit)
    finally:
        journal.close()
    if args.json:
        print(json.dumps({"counts": counts, "jobs": [r.model_dump(mode="json") for r in records]}, indent=2))
        return 0
    print(counts_line(counts))
    print("\n".join(job_lines(records, time.time(), outputs=args.outputs)))
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    journal = _journal(settings.service)
    try:
        found = journal.find(args.job)
        record = journal.request_cancel(found.id) if found is not None else None
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


def cmd_console_url(args: argparse.Namespace, settings: Settings) -> int:
    from membraind.console.access import console_url

    service = settings.service
    if not service.web.enabled:
        raise InputError("the lab console is off ([service.web] enabled = false); turn it on and restart the daemon")
    print(console_url(service.home, service.web))
    return 0


def register(add: Add) -> None:
    """Add the service subcommands."""
    add("serve", cmd_serve, "run the daemon: watch folders and VAST, queue and run jobs (systemd-ready)")
    p = add("worker", cmd_worker, "run jobs from the shared queue on one GPU or the CPU (scale-out; systemd-ready)")
    p.add_argument("--gpu", type=int, help="the GPU to use (its index); the worker sees no other")
    p.add_argument("--cpu", action="store_true", help="use no GPU")
    p.add_argument("--name", help="worker name, unique on this host (default: gpuN, cpu, or worker)")
    p.add_argument("--queues", default="gpu,cpu", help="queues to take jobs from: gpu, cpu or gpu,cpu (default)")
    p = add("secret", cmd_secret, "write a new random secret for signing queue messages ([service.queue] secret_file)")
    p.add_argument("file", type=Path, help="where to write it (refuses to overwrite)")
    p = add("status", cmd_status, "show the job queue and recent jobs (reads the daemon's journal)")
    p.add_argument("job", nargs="?", help="one job id: print everything about it")
    p.add_argument("--limit", type=int, default=20, help="recent jobs to list (default 20)")
    p.add_argument("--outputs", action="store_true", help="list the output paths of finished jobs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("cancel", cmd_cancel, "cancel a queued or running job")
    p.add_argument("job", help="job id")
    add("console-url", cmd_console_url, "print the address that opens the lab console in a browser (token included)")
    p = add("keygen", cmd_keygen, "make a CurveZMQ key pair for the API (the server's or a client's)")
    p.add_argument("name", help="key name, e.g. server, or the user's name (a job records who submitted it)")
    p.add_argument("--dir", type=Path, default=Path("."), help="folder for NAME.key and NAME.key_secret (default: here)")
