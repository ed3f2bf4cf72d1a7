"""The ``membraind-client`` command: talk to a membraind daemon over its ZeroMQ API.

Submit jobs (a request file, or ``--kind`` and ``--set FIELD=VALUE``), follow them
with a progress line, look at the queue, cancel, list the models, and make CurveZMQ
keys. The exit status says how it went (the ``EXIT_*`` constants), so scripts can rely on it.
Protocol details: docs/protocol.md.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO, get_args

import zmq
from pydantic import BaseModel, ValidationError

from membraind_client import __version__
from membraind_client.client import DEFAULT_ENDPOINT, Client, ClientError, DaemonUnreachable, RequestRejected, default_events
from membraind_client.keys import KeyFileError, generate_keys
from membraind_client.messages import JOB_ID_PATTERN, REQUEST_TYPES, Cancel, JobInfo, JobState, Models, Status
from membraind_client.requestfile import RequestFileError, load_request_file, parse_request_text
from membraind_client.table import age, counts_line, job_lines

__all__ = [
    "main", "build_parser", "set_fields", "ProgressLine", "UsageError", "EXIT_OK", "EXIT_JOB_FAILED", "EXIT_USAGE",
    "EXIT_UNREACHABLE", "EXIT_TIMEOUT", "EXIT_INTERRUPTED",
]  # fmt: skip

PROG = "membraind-client"
EXIT_OK = 0  # success; for submit --wait and wait: the job is done
EXIT_JOB_FAILED = 1  # the job ended failed or cancelled
EXIT_USAGE = 2  # bad usage, or the daemon rejected the request
EXIT_UNREACHABLE = 3  # no reply from the daemon
EXIT_TIMEOUT = 4  # wait --timeout-wait ran out; the job goes on
EXIT_INTERRUPTED = 130  # Ctrl-C

STATES: tuple[str, ...] = get_args(JobState)
# Client's own defaults, shown in --help and used when an option is left out
CLIENT_DEFAULTS = {name: p.default for name, p in inspect.signature(Client.__init__).parameters.items()}
ENDPOINT_RE = re.compile(r"tcp://[^\s]+:\d+|ipc://[^\s]+")  # as the daemon's [service.api] accepts them
KEY_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

EPILOG = """\
exit status:
  0    success; for `submit --wait` and `wait`: the job is done
  1    the job ended failed or cancelled
  2    bad usage, or the daemon rejected the request (its message is printed)
  3    no reply from the daemon: it is not running at the endpoint, or (CurveZMQ)
       it does not admit this client's key
  4    `wait`/`submit --wait` gave up after --timeout-wait (the job goes on)
  130  interrupted (Ctrl-C); a submitted job goes on in the daemon

environment:
  MEMBRAIND_ENDPOINT, MEMBRAIND_EVENTS          defaults of --endpoint and --events
  MEMBRAIND_SERVER_KEY, MEMBRAIND_CLIENT_KEY    defaults of --server-key and --key

The protocol, for scripts and other languages: docs/protocol.md in the membraind
repository. Request fields of every job kind: docs/requests.md.
"""


class UsageError(Exception):
    """A command line that cannot work (the message says what to change)."""


def _error(message: object) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


# -- argument types ---------------------------------------------------------------------------
def _endpoint(text: str) -> str:
    if not ENDPOINT_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a ZeroMQ endpoint: use tcp://HOST:PORT or ipc:///path")
    return text


def _job_id(text: str) -> str:
    if not re.fullmatch(JOB_ID_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id: letters, digits and ._:@+-, starting with a "
                                         "letter or digit, at most 128 characters")  # fmt: skip
    return text


def _ranged(kind: Callable[[str], Any], low: float | None = None, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: ``kind`` (int, float) between ``low`` and ``high``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"{low} to {high}"
            raise argparse.ArgumentTypeError(f"{text} is out of range ({bounds})")
        return value

    return parse


def _key_name(text: str) -> str:
    if not KEY_NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a key name is letters, digits and ._- (it becomes a file name)")
    return text


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


# -- --set FIELD=VALUE ------------------------------------------------------------------------
def set_fields(spec: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """``spec`` with each ``FIELD=VALUE`` of ``assignments`` set in it (in place; also returned).

    VALUE is JSON when it parses as JSON (``3``, ``true``, ``[0, 9]``, ``{"x": 1}``, ``"3"``),
    otherwise the text itself. A dotted FIELD sets a field of a nested object
    (``target.mode=volume``), creating the objects on the way.
    """
    for text in assignments:
        name, sep, raw = text.partition("=")
        keys = name.strip().split(".")
        if not sep or not all(keys):
            raise UsageError(f"--set {text!r}: write FIELD=VALUE, e.g. --set sections=[0,9] or --set target.mode=volume")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw  # plain text: paths, names
        node = spec
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                field = ".".join(keys[: depth + 1])
                raise UsageError(f"--set {text!r}: {field} is {json.dumps(child)}, not an object with fields; "
                                 f"set {field} itself instead")  # fmt: skip
            node = child
        node[keys[-1]] = value
    return spec


# -- output -----------------------------------------------------------------------------------
def _print_json(value: BaseModel | dict | list) -> None:
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    print(json.dumps(data, indent=2))


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")


def _progress_text(job: JobInfo, width: int = 20) -> str:
    fraction = min(max(job.progress, 0.0), 1.0)
    filled = round(fraction * width)
    eta = job.progress_detail.eta if job.progress_detail is not None and job.state == "running" else ""
    return (f"{job.id}  {job.state:9s} [{'#' * filled}{'-' * (width - filled)}] {fraction * 100:5.1f}%  "
            f"{f'ETA {eta}  ' if eta else ''}{job.message}")  # fmt: skip


class ProgressLine:
    """A job's progress as plain text on ``stream``: redrawn in place (``\\r``) on a terminal,
    one line per change otherwise (log files, pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._open = False  # a redrawn line is waiting for its newline

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    def update(self, job: JobInfo) -> None:
        """Show ``job``'s state, progress and message."""
        line = _progress_text(job)
        if self.tty:
            width = self._columns() - 1  # the last column would wrap on some terminals
            self.stream.write("\r" + line[:width].ljust(width))  # padding wipes a longer previous line
            self._open = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the redrawn line, so that what follows starts on a line of its own."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _show_job(job: JobInfo) -> None:
    origin = f"from {job.source}" + (f", by {job.client}" if job.client else "")
    print(f"job       {job.id}")
    print(f"kind      {job.kind} (priority {job.priority}, {origin})")
    print(f"state     {job.state} {job.progress * 100:.0f}%  {job.message}")
    if job.error:
        print(f"error     {job.error}")
    if job.result is not None:
        if job.result.summary:
            print(f"summary   {job.result.summary}")
        for number, path in enumerate(job.result.outputs):
            print(f"{'outputs' if number == 0 else '':10s}{path}")
    print(f"attempts  {job.attempts}" + ("  (cancel requested)" if job.cancel_requested and not job.final else ""))
    print(f"created   {_when(job.created)}   started {_when(job.started)}   finished {_when(job.finished)}")


# -- the commands -----------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Client:
    options = {"timeout": args.timeout, "retries": args.retries, "server_key": args.server_key, "key": args.key}
    events = args.events or default_events(args.endpoint)
    return Client(args.endpoint, events=events, **{k: v for k, v in options.items() if v is not None})


def cmd_ping(args: argparse.Namespace, client: Client) -> int:
    pong = client.ping()
    if args.json:
        _print_json(pong)
    else:
        print(f"membraind {pong.daemon_version} at {client.endpoint}, up {age(time.time() - pong.started)}; "
              f"{counts_line(pong.counts)}")  # fmt: skip
    return EXIT_OK


def _read_request(name: str) -> dict[str, Any]:
    if name == "-":  # JSON or TOML on stdin; a JSON request starts with '{'
        raw = sys.stdin.buffer.read()
        return parse_request_text(raw, "json" if raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "toml")
    try:
        return load_request_file(Path(name))
    except OSError as exc:
        raise UsageError(f"cannot read the request file {name}: {exc.strerror or exc}") from None
    except RequestFileError as exc:
        raise UsageError(f"{name}: {exc}") from None


def cmd_submit(args: argparse.Namespace, client: Client) -> int:
    spec = _read_request(args.file) if args.file else {}
    if args.kind:
        spec["kind"] = args.kind
    set_fields(spec, args.set)
    if not spec:
        raise UsageError("give a request file (submit FILE) or the job's kind and fields (submit --kind KIND "
                         "--set FIELD=VALUE ...); docs/requests.md lists every kind and field")  # fmt: skip
    if "id" in spec and not isinstance(spec["id"], str):
        raise UsageError(f"id: a job id is text (\"run3\", not {json.dumps(spec['id'])})")
    submitted = client.submit(spec, job_id=args.id, priority=args.priority)
    job = submitted.job
    if args.wait:
        if not args.json:
            print(_submitted_text(job, submitted.created), file=sys.stderr)
        return _follow(args, client, job.id)
    if args.json:
        _print_json(submitted)
    else:
        print(_submitted_text(job, submitted.created))
        if not job.final:
            print(f"follow it with: {PROG} wait {job.id}")
    return EXIT_OK


def _submitted_text(job: JobInfo, created: bool) -> str:
    if created:
        return f"job {job.id} submitted ({job.kind}, priority {job.priority}): {job.state}"
    return f"job {job.id} existed already (same id), not submitted again: {job.state}"


def _follow(args: argparse.Namespace, client: Client, job_id: str) -> int:
    """Follow a job to its end with a progress line on stderr; the exit status says how it ended."""
    progress = ProgressLine(sys.stderr)
    try:
        job = client.wait(job_id, progress.update, timeout=args.timeout_wait)
    except TimeoutError:
        progress.close()
        _error(f"gave up waiting after {args.timeout_wait:g} s; job {job_id} goes on in the daemon "
               f"(`{PROG} wait {job_id}` follows it again)")  # fmt: skip
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        progress.close()
        print(f"{PROG}: interrupted; job {job_id} goes on in the daemon (`{PROG} cancel {job_id}` stops it)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    progress.close()
    if args.json:
        _print_json(job)
    elif job.state == "done":
        result = job.result
        seconds = f" in {result.seconds:.1f} s" if result and result.seconds is not None else ""
        print(f"job {job.id} done{seconds}: {result.summary if result else job.message}", file=sys.stderr)
        for path in result.outputs if result else []:
            print(path)  # stdout holds only the outputs, for scripts
    else:
        print(f"job {job.id} {job.state}: {job.error or job.message}", file=sys.stderr)
    return EXIT_OK if job.state == "done" else EXIT_JOB_FAILED


def cmd_wait(args: argparse.Namespace, client: Client) -> int:
    return _follow(args, client, args.job)


def cmd_status(args: argparse.Namespace, client: Client) -> int:
    if args.json:
        _print_json(client.request(Status(job_id=args.job)))
    else:
        _show_job(client.status(args.job))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, client: Client) -> int:
    reply = client.list(states=args.state, limit=args.limit)
    if args.json:
        _print_json(reply)
        return EXIT_OK
    print(counts_line(reply.counts))
    print("\n".join(job_lines(reply.jobs, time.time())))
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, client: Client) -> int:
    if args.json:
        _print_json(client.request(Cancel(job_id=args.job)))
        return EXIT_OK
    job = client.cancel(args.job)
    if job.state == "running":
        print(f"job {job.id}: cancelling; it stops at its next safe point (training keeps its checkpoint)")
    elif job.state == "cancelled":
        print(f"job {job.id}: cancelled")
    else:
        print(f"job {job.id}: {job.state} already; nothing to cancel")
    return EXIT_OK


def cmd_models(args: argparse.Namespace, client: Client) -> int:
    reply = client.request(Models())
    if args.json:
        _print_json(reply)
        return EXIT_OK
    models = reply.models
    if not models:
        print("no model bundles: the daemon lists those in its models folder ([service] models_dir, "
              "default <home>/models) and those its watchers use")  # fmt: skip
    for model in models:
        details = [f"classes {', '.join(model.classes)}" if model.classes else "", f"mip {model.mip}" if model.mip is not None else "",
                   f"from {model.parent}" if model.parent else "", model.created or ""]  # fmt: skip
        print(f"{model.name:24s} {model.path}")
        if any(details):
            print(f"{'':24s} {'; '.join(d for d in details if d)}")
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    try:
        public, secret = generate_keys(args.dir, args.name)
    except OSError as exc:
        raise UsageError(f"cannot write keys in {args.dir}: {exc.strerror or exc}") from None
    if args.json:
        _print_json({"public": str(public.resolve()), "secret": str(secret.resolve())})
        return EXIT_OK
    print(f"public key  {public.resolve()}")
    print(f"secret key  {secret.resolve()}  (keep it private)")
    print()
    print(f"For a client: put {public.name} into the daemon's authorized_keys folder ([service.api] "
          f"authorized_keys) and use --key {secret.resolve()} (or $MEMBRAIND_CLIENT_KEY).")  # fmt: skip
    print(f"For the daemon: set [service.api] server_key = \"{secret.resolve()}\" and give clients "
          f"{public.name} for --server-key (or $MEMBRAIND_SERVER_KEY).")  # fmt: skip
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The ``membraind-client`` argument parser (defaults read from the environment now)."""
    endpoint = os.environ.get("MEMBRAIND_ENDPOINT") or DEFAULT_ENDPOINT
    parser = argparse.ArgumentParser(
        prog=PROG, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Submit and follow membraind jobs over the daemon's ZeroMQ API.",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--endpoint", type=_endpoint, default=endpoint,
                        help=f"the daemon's API: tcp://HOST:PORT or ipc:///path (default {endpoint})")  # fmt: skip
    parser.add_argument("--events", type=_endpoint,
                        help="the daemon's event stream (default $MEMBRAIND_EVENTS, else the endpoint's host one "
                             "port up; for ipc endpoints give it, or progress comes only every 10 s)")  # fmt: skip
    parser.add_argument("--timeout", type=_ranged(float, 0.01), metavar="SECONDS",
                        help=f"wait this long for each reply before asking again (default {CLIENT_DEFAULTS['timeout']})")  # fmt: skip
    parser.add_argument("--retries", type=_ranged(int, 0), metavar="N",
                        help=f"ask again this many times before giving up (default {CLIENT_DEFAULTS['retries']})")  # fmt: skip
    parser.add_argument("--server-key", type=Path, metavar="FILE", default=_env_path("MEMBRAIND_SERVER_KEY"),
                        help="CurveZMQ: the daemon's public .key file (default $MEMBRAIND_SERVER_KEY)")  # fmt: skip
    parser.add_argument("--key", type=Path, metavar="FILE", default=_env_path("MEMBRAIND_CLIENT_KEY"),
                        help="CurveZMQ: this client's .key_secret file (default $MEMBRAIND_CLIENT_KEY)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the daemon's replies as JSON (docs/protocol.md)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        p.set_defaults(func=func)
        return p

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--timeout-wait", type=_ranged(float, 0.01), metavar="SECONDS",
                       help="give up waiting after this long (exit status 4; the job goes on)")  # fmt: skip

    add("ping", cmd_ping, "check that the daemon answers; show its version and job counts")
    p = add("submit", cmd_submit, "submit a job: a request file (docs/requests.md), or --kind and --set")
    p.add_argument("file", nargs="?", metavar="FILE", help="request file (.json or .toml; - reads standard input)")
    p.add_argument("--kind", help="the job kind: predict, train, finetune, segment2d, export-onnx")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set a field (repeatable); VALUE is JSON if it parses, else text; a dotted FIELD sets a "
                        "nested one: --set sections=[0,9] --set target.mode=volume")  # fmt: skip
    p.add_argument("--id", type=_job_id, help="the job id (default: the file's id, else a random one); the same "
                                              "id twice gives one job")  # fmt: skip
    p.add_argument("--priority", type=_ranged(int, -100, 100), metavar="N", help="-100 to 100, higher runs first")
    p.add_argument("--wait", action="store_true",
                   help="follow the job to its end (progress on stderr) and print its outputs, one a line")  # fmt: skip
    waiting(p)
    p = add("wait", cmd_wait, "follow a job to its end (progress on stderr), then print its outputs, one a line")
    p.add_argument("job", type=_job_id, metavar="JOB", help="job id")
    waiting(p)
    p = add("status", cmd_status, "everything about one job")
    p.add_argument("job", type=_job_id, metavar="JOB", help="job id")
    p = add("list", cmd_list, "recent jobs, newest first, and the count in each state")
    p.add_argument("--state", action="extend", nargs="+", choices=STATES, metavar="STATE",
                   help=f"only jobs in these states ({', '.join(STATES)})")  # fmt: skip
    p.add_argument("--limit", type=_ranged(int, 1, 1000), default=20, metavar="N", help="at most N jobs (default 20)")
    p = add("cancel", cmd_cancel, "cancel a job: a queued one at once, a running one at its next safe point")
    p.add_argument("job", type=_job_id, metavar="JOB", help="job id")
    add("models", cmd_models, "the model bundles the daemon knows")
    p = add("keygen", cmd_keygen, "make a CurveZMQ key pair: NAME.key (public) and NAME.key_secret (private)")
    p.add_argument("name", type=_key_name, metavar="NAME", help="whose key: a person, a host, or the daemon")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to write the two files (default: here)")
    return parser


def _invalid(exc: ValidationError) -> str:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors())
    if exc.title in {cls.__name__ for cls in REQUEST_TYPES}:
        return f"invalid request: {problems}"
    return f"cannot read the daemon's reply ({problems}); does this {PROG} {__version__} match the daemon's version?"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``membraind-client``; returns the exit status (see the module's ``EXIT_*``)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse has printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.func is cmd_keygen:
            return cmd_keygen(args)
        with _client(args) as client:
            return args.func(args, client)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DaemonUnreachable as exc:
        _error(exc)
        return EXIT_UNREACHABLE
    except RequestRejected as exc:
        _error(f"the daemon rejected the request: {exc}")
        return EXIT_USAGE
    except (UsageError, ClientError, KeyFileError, RequestFileError) as exc:
        _error(exc)
        return EXIT_USAGE
    except ValidationError as exc:
        _error(_invalid(exc))
        return EXIT_USAGE
    except zmq.ZMQError as exc:
        _error(f"ZeroMQ failed on {args.endpoint}: {exc}")
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
