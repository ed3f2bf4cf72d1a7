"""The request folder: request files read, checked, accepted or rejected, with real
folders, a real watcher, a real journal and a real (SQLite) Huey queue behind
``Dispatcher.submit``. Queues and engines are never started: nothing runs."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from membraind_client.messages import JobResult

from membraind.config import Settings
from membraind.errors import MembraindError
from membraind.predict.request import BoxRegion
from membraind.service.dispatcher import Dispatcher
from membraind.service.journal import SqliteJournal
from membraind.service.queues import JobQueues, open_hueys
from membraind.service.watchers.requests import MAX_REQUEST_BYTES, RequestError, RequestFolder, read_request

DEADLINE = 30.0
SEED = 20120


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE,
               detail: Callable[[], str] | None = None) -> None:  # fmt: skip
    """Poll ``predicate`` every 0.05 s until it holds; fail saying ``what`` did not happen (and ``detail()``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}" + (f": {detail()}" if detail else ""))
        time.sleep(0.05)


# -- building requests -----------------------------------------------------------------------
def valid_request(kind: str, data: Path) -> dict:
    """A valid request of ``kind`` whose paths all lie below ``data``."""
    if kind == "predict":
        box = {"x0": 0, "x1": 512, "y0": 0, "y1": 256, "z0": 2, "z1": 5, "mip": 0}
        return {"kind": "predict", "volume": str(data / "em"), "bundles": [str(data / "models" / "m1")],
                "out": str(data / "pred"), "target": {"mode": "box", "box": box}}  # fmt: skip
    if kind == "train":
        return {"kind": "train", "em": str(data / "gt" / "em"), "labels": str(data / "gt" / "labels"),
                "out": str(data / "runs" / "r1"), "epochs": 3, "seed": 7}  # fmt: skip
    if kind == "finetune":
        return {"kind": "finetune", "em": str(data / "gt" / "em"), "labels": str(data / "gt" / "labels"),
                "out": str(data / "runs" / "ft"), "parent": str(data / "models" / "m1"), "mode": "leaky",
                "leaky_factor": 0.2}  # fmt: skip
    if kind == "segment2d":
        return {"kind": "segment2d", "membrane": str(data / "pred" / "membrane"), "out": str(data / "seg"),
                "sections": [0, 3], "min_size": 20}  # fmt: skip
    if kind == "export-onnx":
        return {"kind": "export-onnx", "bundle": str(data / "models" / "m1"), "out": str(data / "m1.onnx")}
    if kind == "vast-paint":
        box = {"x0": 0, "x1": 256, "y0": 0, "y1": 256, "z0": 0, "z1": 2, "mip": 0}
        return {"kind": "vast-paint", "membrane": str(data / "pred" / "membrane"), "port": 22081,
                "segmentation_layer": "segmentation", "target": {"mode": "box", "box": box}}  # fmt: skip
    if kind == "import-model":
        return {"kind": "import-model", "file": str(data / "external.onnx"), "out": str(data / "models" / "ext"),
                "patch_size": 512}  # fmt: skip
    raise AssertionError(kind)


KINDS = ["predict", "train", "finetune", "segment2d", "export-onnx", "vast-paint", "import-model"]
REQUIRED = {
    "predict": ["volume", "bundles", "out"], "train": ["em", "labels", "out"],
    "finetune": ["em", "labels", "out"], "segment2d": ["membrane", "out"], "export-onnx": ["bundle"],
    "vast-paint": ["membrane", "target"], "import-model": ["file", "out"],
}  # fmt: skip


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(data: dict, last: str | None = None) -> str:
    """``data`` as TOML, one key per line (``last`` written last), nested objects as inline tables."""
    keys = [k for k in data if k != last] + ([last] if last in data else [])
    return "".join(f"{_toml_key(k)} = {toml_value(data[k])}\n" for k in keys)


def encode(data, fmt: str) -> bytes:
    return (json.dumps(data, indent=1) if fmt == "json" else to_toml(data)).encode("utf-8")


# -- the service under test ----------------------------------------------------------------------
@pytest.fixture
def service(tmp_path):
    """A dispatcher on real SQLite files and a started RequestFolder feeding it; home is the only root."""
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    settings = Settings.model_validate({"service": {"home": str(home)}})
    journal = SqliteJournal(tmp_path / "journal.db")
    dispatcher = Dispatcher(settings.service, settings.transfer, journal, JobQueues(open_hueys(settings.service)))
    folder = RequestFolder(settings.service.requests_path(), dispatcher.submit, journal.get, polling=False, rescan_seconds=5.0)
    dispatcher.add_listener(folder.on_job)
    folder.folder.start()
    try:
        yield SimpleNamespace(home=home, data=data, journal=journal, dispatcher=dispatcher, folder=folder,
                              path=folder.path, tmp=tmp_path)  # fmt: skip
    finally:
        folder.folder.stop()
        journal.close()


_drops = itertools.count()


def drop(folder: Path, name: str, content: bytes) -> Path:
    """Put a request file in place the way users are told to: write a hidden file, then rename it."""
    tmp = folder / f".tmp-{next(_drops)}"
    tmp.write_bytes(content)
    target = folder / name
    os.rename(tmp, target)
    return target


def answer(service, name: str) -> tuple[str, Path]:
    """Wait for the answer to request ``name``: ("accepted", status file) or ("rejected", error file)."""
    status = service.path / "accepted" / f"{name}.status.json"
    error = service.path / "rejected" / f"{name}.error.txt"
    wait_until(lambda: status.exists() or error.exists(), f"{name} is accepted or rejected")
    return ("accepted", status) if status.exists() else ("rejected", error)


# -- read_request on valid files -------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["json", "toml"])
@pytest.mark.parametrize("kind", KINDS)
def test_read_request_valid(tmp_path, kind, fmt):
    request = valid_request(kind, tmp_path / "data") | {"id": f"run-{kind}.{fmt}"}
    path = tmp_path / f"r.{fmt}"
    path.write_bytes(encode(request, fmt))
    job = read_request(path)
    assert job.spec.kind == kind
    assert job.id == f"run-{kind}.{fmt}"
    assert job.source == "request-file"
    dumped = job.spec.model_dump(mode="json")
    for field in REQUIRED[kind]:
        assert dumped[field] == request[field]
    if kind == "predict":
        assert isinstance(job.spec.target, BoxRegion)
        assert (job.spec.target.box.x1, job.spec.target.box.z0) == (512, 2)
        assert job.priority == 10  # a box: volume priority
    if kind == "segment2d":
        assert job.spec.sections == (0, 3)
    if kind == "finetune":
        assert (job.spec.mode, job.spec.leaky_factor) == ("leaky", 0.2)


def test_read_request_toml_with_tables_and_defaults(tmp_path):
    path = tmp_path / "box.toml"
    path.write_text(textwrap.dedent(f"""\
        # a comment
        kind = "predict"
        volume = "{tmp_path}/em"
        bundles = ["{tmp_path}/m1", "{tmp_path}/m2"]
        out = "{tmp_path}/out"
        priority = 42

        [target]
        mode = "box"

        [target.box]
        x0 = 10
        x1 = 20
        y0 = 30
        y1 = 40
        z0 = 0
        z1 = 1
        mip = 1
        """), encoding="utf-8")  # fmt: skip
    job = read_request(path)
    assert job.spec.target.box.at_mip(0).x0 == 20
    assert len(job.spec.bundles) == 2 and job.priority == 42
    assert len(job.id) == 32  # no id given: a random one
    assert read_request(path).id != job.id


# -- fuzz: 1,000 invalid request files ---------------------------------------------------------------
def _valid(rng: random.Random, data: Path) -> tuple[str, dict]:
    kind = rng.choice(KINDS)
    return kind, valid_request(kind, data)


def _dump(rng: random.Random, obj, fmt: str | None = None) -> tuple[str, bytes]:
    fmt = fmt or rng.choice(["json", "toml"])
    return fmt, encode(obj, fmt)


def bad_random_bytes(rng, data):
    fmt, size = rng.choice(["json", "toml"]), rng.randint(1, 3000)
    if rng.random() < 0.5:
        return fmt, rng.randbytes(size)
    alphabet = '{}[]":,=.\'#\n\t kind predict 0123456789-eE+truefalsenull/'
    return fmt, "".join(rng.choice(alphabet) for _ in range(size)).encode()  # text the parsers must look at


def bad_utf8(rng, data):
    fmt, raw = _dump(rng, _valid(rng, data)[1])
    junk = rng.choice([b"\xff", b"\xc3\x28", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80", b"\xe2\x82"])
    at = raw.index(b"/") + 1  # inside the first path string
    return fmt, raw[:at] + junk + raw[at:]


def bad_truncated(rng, data):
    kind, request = _valid(rng, data)
    if rng.random() < 0.5:
        raw = json.dumps(request).encode()
        return "json", raw[: int(rng.random() * (len(raw) - 1))]  # the closing brace is always cut off
    # TOML: kind goes last; cut before its closing quote (unterminated, or kind missing).
    raw = to_toml(request, last="kind").encode()
    return "toml", raw[: int(rng.random() * (len(raw) - 2))]


def bad_not_object(rng, data):
    request = _valid(rng, data)[1]
    value = rng.choice([[], [request], 3, -1.5, 1e300, "predict", json.dumps(request), None, True, False, [[[]]]])
    return "json", json.dumps(value).encode()


def bad_kind(rng, data):
    kind, request = _valid(rng, data)
    fmt = rng.choice(["json", "toml"])
    values = ["", "Predict", "TRAIN", "predict ", " train", "predikt", "export_onnx", "exportonnx", "segment3d",
              "train\n", "fine-tune", 1, 0, -7, 2.5, True, False, [], ["predict"], [kind], {"kind": kind}, {}]  # fmt: skip
    if fmt == "json":
        values.append(None)
    request["kind"] = rng.choice(values)
    return _dump(rng, request, fmt)


def bad_missing(rng, data):
    kind, request = _valid(rng, data)
    choice = rng.randrange(4)
    if choice == 0 or kind not in ("predict", "train", "segment2d"):
        del request[rng.choice(REQUIRED[kind] + ["kind"])]
    elif kind == "predict":
        request["target"] = rng.choice([{"mode": "box"}, {"mode": "anchors"}, {"box": request["target"]["box"]}])
    elif kind == "train":
        request[rng.choice(["val_em", "val_labels"])] = str(data / "val")  # one of a pair
    else:
        request = {"kind": "segment2d"}
    return _dump(rng, request)


def bad_type(rng, data):
    kind, request = _valid(rng, data)
    path_field = rng.choice([f for f in REQUIRED[kind] if f != "bundles"])
    not_paths = [5, 2.5, True, [], [str(data)], {"path": str(data)}]
    if path_field != "volume":
        not_paths.append({})  # a volume {} is a VAST source with default fields: valid
    changes = [
        (path_field, rng.choice(not_paths)),
        ("id", rng.choice([5, 1.5, True, [], {}, "", "-starts-with-dash", "has space", "x" * 129, "slash/no", "ä"])),
        ("priority", rng.choice(["high", "", 1.5, [], {}, "ten"])),
    ]  # fmt: skip
    if kind == "predict":
        changes += [("bundles", rng.choice([str(data / "m"), [], [5], [[str(data)]], {}])),
                    ("mip", rng.choice(["zero", 0.5, [], {}])),
                    ("target", rng.choice(["box", 5, [], {"mode": "cube"}, {"mode": "box", "box": "0,1,0,1,0,1"}])),
                    ("volume", rng.choice([{"host": []}, {"layer": []}, {"port": "x"}])),
                    ("outputs", rng.choice(["membrane", ["mask"], [1]])),
                    ("overwrite", rng.choice(["maybe", 2, [], {}]))]  # fmt: skip
    elif kind in ("train", "finetune"):
        changes += [("epochs", rng.choice(["ten", 2.5, [], {}, "many"])),
                    ("restart", rng.choice(["perhaps", 3, []])), ("seed", rng.choice(["x", 0.5, []]))]  # fmt: skip
    elif kind == "segment2d":
        changes += [("sections", rng.choice(["0-3", [1], [1, 2, 3], [0.5, 2], {}])),
                    ("label_tiff", rng.choice(["yes please", 7]))]  # fmt: skip
    field, value = rng.choice(changes)
    request[field] = value
    return _dump(rng, request)


def bad_range(rng, data):
    kind, request = _valid(rng, data)
    changes = [("priority", rng.choice([101, -101, 10**40, -(10**40)]))]
    if kind == "predict":
        box = dict(request["target"]["box"])
        axis = rng.choice("xyz")
        box[f"{axis}0"], box[f"{axis}1"] = 10, 3
        changes += [("mip", rng.choice([-1, -100])), ("target", {"mode": "box", "box": box}),
                    ("target", {"mode": "box", "box": request["target"]["box"] | {"mip": rng.choice([17, -1])}}),
                    ("target", {"mode": "anchors", "points": []}),
                    ("target", {"mode": "anchors", "points": [{"x": 1, "y": 2, "z": 3}], "cube_xy": rng.choice([0, -5])}),
                    ("volume", {"host": "localhost", "port": rng.choice([0, 70000, -1])})]  # fmt: skip
    elif kind in ("train", "finetune"):
        changes += [("epochs", rng.choice([0, -3])), ("steps_per_epoch", 0), ("patch_size", rng.choice([8, 15, 0])),
                    ("max_minutes", rng.choice([0, -1.5]))]  # fmt: skip
        if kind == "finetune":
            changes += [("leaky_factor", rng.choice([0, 1.5, -0.1])), ("episodic_ratio", rng.choice([0, 1, 2.0]))]
    elif kind == "segment2d":
        changes += [("sections", rng.choice([[3, 1], [-1, 2]])), ("h", rng.choice([0, -1.0, 1.5])), ("sigma", -0.5),
                    ("min_size", -1), ("membrane_threshold", rng.choice([0, 1, 1.5])), ("mip", -2)]  # fmt: skip
    field, value = rng.choice(changes)
    request[field] = value
    fmt = rng.choice(["json", "toml"])
    if fmt == "json" and kind in ("train", "finetune") and rng.random() < 0.2:
        request["max_minutes"] = float("nan")  # JSON as Python reads it: NaN is not > 0
    return _dump(rng, request, fmt)


def bad_extra(rng, data):
    kind, request = _valid(rng, data)
    name = rng.choice(["colour", "bundle_path", "outdir", "Kind", "ids", "priorty", "gpu", "é", "a b", "0"])
    value = rng.choice(["blue", 1, [1, 2], {"x": 1}, True])
    where = rng.randrange(3)
    if where == 1 and kind == "predict":
        request["target"][name] = value
    elif where == 2 and kind == "predict":
        request["target"]["box"][name] = value
    else:
        request[name] = value
    return _dump(rng, request)


def bad_nested(rng, data):
    depth = rng.choice([100_000, 20_000, 5_000])
    request = _valid(rng, data)[1]
    shape = rng.randrange(5)
    if shape == 0:
        return "json", b"[" * depth
    if shape == 1:
        return "json", b'{"a":' * depth
    if shape == 2:  # a valid request with a deep value in it
        text = json.dumps(request)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
        return "json", text.encode()
    if shape == 3:
        return "toml", b"a = " + b"[" * depth + b"]" * depth
    return "toml", b"a = " + b"{b = " * depth


def bad_too_big(rng, data):
    kind, request = _valid(rng, data)
    fmt, raw = _dump(rng, request)
    pad = MAX_REQUEST_BYTES + 1 - len(raw) + rng.randrange(0, 1000)
    return fmt, raw + (b" " * pad if fmt == "json" else b"#" + b"x" * pad)  # valid but for its size


def bad_empty(rng, data):
    fmt = rng.choice(["json", "toml"])
    return fmt, rng.choice([b"", b" ", b"\n\n", b"\t \r\n", b"\xef\xbb\xbf", b"# nothing\n"])


def bad_path_chars(rng, data):
    """NUL in a path, or an escaped lone surrogate in any text: no file name, and nothing the journal can store."""
    kind, request = _valid(rng, data)
    field = rng.choice([f for f in REQUIRED[kind] if f not in ("bundles", "target")])  # a path (a text)
    char = rng.choice(["\x00", "\ud800", "\udcff"])
    request[field] = str(data / f"a{char}b")
    if kind in ("train", "finetune") and char != "\x00" and rng.random() < 0.5:
        request = valid_request(kind, data) | {rng.choice(["name", "device", "mapping"]): f"x{char}"}
    fmt = "toml" if char == "\x00" and rng.random() < 0.5 else "json"  # TOML has no lone surrogates
    return fmt, (json.dumps(request) if fmt == "json" else to_toml(request)).encode("ascii")  # as \u escapes


EXPECTED = {  # what the error of each case says (one of)
    bad_random_bytes: ["not UTF-8 text", "not valid JSON", "not valid TOML", "must hold one object", "kind must be one of"],
    bad_utf8: ["not UTF-8 text"], bad_truncated: ["not valid JSON", "not valid TOML", "kind must be one of"],
    bad_not_object: ["must hold one object"], bad_kind: ["kind must be one of"],
    bad_missing: ["Field required", "kind must be one of", "give both val_em and val_labels", "discriminator 'mode'",
                  "give out (the run folder) or model",
                  "give out (the bundle folder to make) or model",
                  "give bundles (model bundle folders) or models", "ground truth: give em and labels"],
    bad_type: ["invalid request: "], bad_range: ["invalid request: "], bad_extra: ["Extra inputs are not permitted"],
    bad_nested: ["not valid JSON", "not valid TOML"], bad_too_big: [f"requests are at most {MAX_REQUEST_BYTES} bytes"],
    bad_empty: ["not valid JSON", "not valid TOML", "kind must be one of"],
    bad_path_chars: ["NUL character", "unknown label mapping"],  # a mapping is checked against the presets first
}  # fmt: skip
CASES = [bad_random_bytes, bad_utf8, bad_truncated, bad_not_object, bad_kind, bad_missing, bad_type, bad_range,
         bad_extra, bad_empty, bad_path_chars]  # fmt: skip
HEAVY = {bad_nested: 30, bad_too_big: 3}  # fewer of the large ones: they cost disk and time
N_BAD = 1000


def bad_requests(data: Path) -> list[tuple[str, str, bytes]]:
    """1,000 invalid request files, (case, name, bytes), the same on every run (but for ``data``)."""
    makers = [m for m, n in HEAVY.items() for _ in range(n)]
    makers += [CASES[i % len(CASES)] for i in range(N_BAD - len(makers))]
    out = []
    for i, maker in enumerate(makers):
        fmt, raw = maker(random.Random(SEED * 10_000 + i), data)  # one seed per file: each can be made alone
        out.append((maker.__name__, f"bad-{i}.{fmt}", raw))
    return out


def test_fuzz_cases_are_invalid_by_construction(tmp_path):
    cases = bad_requests(tmp_path / "data")
    assert len(cases) == N_BAD
    assert bad_requests(tmp_path / "data") == cases, "the fuzz set must not change between runs"
    assert {c for c, _, _ in cases} == {m.__name__ for m in [*CASES, *HEAVY]}
    expected = {m.__name__: e for m, e in EXPECTED.items()}
    folder = tmp_path / "fuzz"
    folder.mkdir()
    for case, name, raw in cases:
        path = folder / name
        path.write_bytes(raw)
        try:
            read_request(path)
        except RequestError as exc:
            assert any(e in str(exc) for e in expected[case]), f"{name} ({case}): unexpected error {exc}"
        except Exception as exc:  # noqa: BLE001 - the point: nothing but RequestError
            pytest.fail(f"{name} ({case}): read_request raised {type(exc).__name__}: {exc}")
        else:
            pytest.fail(f"{name} ({case}) was read as a valid request: {raw[:300]!r}")


def test_fuzz_request_folder_rejects_every_bad_file(service):
    cases = bad_requests(service.data)
    for _, name, raw in cases:
        drop(service.path, name, raw)
    rejected = service.path / "rejected"

    def unanswered() -> str:
        left = [f"{n} ({c})" for c, n, _ in cases if not (rejected / f"{n}.error.txt").exists()]
        return f"{len(left)} without an answer, e.g. {left[:10]}; accepted: {service.journal.counts()}"

    wait_until(lambda: rejected.is_dir() and len(list(rejected.glob("*.error.txt"))) >= N_BAD,
               f"rejected/ holds {N_BAD} error files", timeout=120, detail=unanswered)  # fmt: skip
    for case, name, raw in cases:
        assert not (service.path / name).exists(), f"{name} ({case}) was left in the request folder"
        assert (rejected / name).read_bytes() == raw, f"{name} ({case}) was not moved to rejected/ unchanged"
        error = (rejected / f"{name}.error.txt").read_text(encoding="utf-8")
        assert error.startswith(f"{name}: ") and len(error) > len(name) + 20, f"{name} ({case}): {error!r}"
        assert "docs/requests.md" in error
    assert len(list(rejected.iterdir())) == 2 * N_BAD
    accepted = service.path / "accepted"
    assert not accepted.exists() or not any(accepted.iterdir())
    assert service.journal.counts() == {}
    assert service.journal.list(limit=None) == []
    assert service.dispatcher.queues.pending() == {"gpu": 0, "cpu": 0}
    assert service.folder.folder.healthy() is True
    assert sorted(p.name for p in service.path.iterdir()) == ["rejected"]  # no temporary files left either


def test_toml_with_long_dotted_keys_is_refused_quickly(tmp_path):
    """tomllib needs memory quadratic in a dotted key's length: these 80 kB would take 6 GB."""
    path = tmp_path / "dots.toml"
    path.write_text("kind = 'predict'\n" + "a" + ".a" * 40_000 + " = 1\n", encoding="utf-8")
    assert path.stat().st_size < MAX_REQUEST_BYTES
    script = textwrap.dedent(f"""\
        import resource, sys
        from pathlib import Path
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from membraind.service.watchers.requests import RequestError, read_request
        try:
            read_request(Path({str(path)!r}))
        except RequestError as exc:
            print("RequestError:", exc)
        """)  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("RequestError:"), result.stdout + result.stderr[-2000:]


# -- paths: roots and relative paths ------------------------------------------------------------------------
def test_paths_outside_the_roots_are_rejected(service):
    sibling = service.tmp / "elsewhere"
    sibling.mkdir()
    link = service.data / "link"
    link.symlink_to(sibling, target_is_directory=True)  # inside home by name, outside once resolved
    cases = {
        "etc.json": ("out", valid_request("segment2d", service.data) | {"out": "/etc/membraind-out"}),
        "sibling.toml": ("out", valid_request("export-onnx", service.data) | {"out": str(sibling / "m.onnx")}),
        "link.json": ("out", valid_request("train", service.data) | {"out": str(link / "run")}),
        "dotdot.json": ("bundles[0]", valid_request("predict", service.data)
                        | {"bundles": [str(service.home / ".." / "elsewhere" / "m")]}),  # fmt: skip
        "parent.json": ("parent", valid_request("finetune", service.data) | {"parent": str(sibling / "m")}),
    }
    for name, (_, request) in cases.items():
        drop(service.path, name, encode(request, name.rsplit(".", 1)[1]))
    for name, (field, _) in cases.items():
        outcome, path = answer(service, name)
        assert outcome == "rejected", name
        error = path.read_text(encoding="utf-8")
        assert error.startswith(f"{name}: {field}: "), error
        assert "outside the folders this daemon may use" in error and str(service.home) in error, error
        assert (service.path / "rejected" / name).exists()
    assert service.journal.counts() == {}
    assert service.dispatcher.queues.pending() == {"gpu": 0, "cpu": 0}


def test_a_rejected_request_names_every_error_it_holds(service):
    faulty = valid_request("predict", service.data) | {"id": "bad id!", "priority": "high", "colour": "red"}
    del faulty["out"]
    outside = valid_request("train", service.data) | {"em": "/etc/em", "out": "/srv/runs/r1"}
    drop(service.path, "faulty.json", encode(faulty, "json"))
    drop(service.path, "outside.toml", encode(outside, "toml"))
    outcome, path = answer(service, "faulty.json")
    error = path.read_text(encoding="utf-8")
    assert outcome == "rejected"
    for where in ("id:", "priority:", "predict.out: Field required", "predict.colour: Extra inputs"):
        assert where in error, f"{where} is not named in {error}"
    outcome, path = answer(service, "outside.toml")
    error = path.read_text(encoding="utf-8")
    assert outcome == "rejected"
    assert "em: /etc/em is outside" in error and "out: /srv/runs/r1 is outside" in error, error
    assert service.journal.counts() == {}


def test_relative_paths_are_refused(service):
    cases = {
        "rel-out.json": ("out", valid_request("segment2d", service.data) | {"out": "seg/out"}),
        "rel-volume.toml": ("volume", valid_request("predict", service.data) | {"volume": "em"}),
        "rel-bundle.json": ("bundles[1]", valid_request("predict", service.data)
                            | {"bundles": [str(service.data / "m"), "./models/m2"]}),  # fmt: skip
        "rel-dot.json": ("bundle", {"kind": "export-onnx", "bundle": ""}),  # "" is the folder "."
        "rel-home.json": ("em", valid_request("train", service.data) | {"em": "~/em"}),
    }
    for name, (_, request) in cases.items():
        drop(service.path, name, encode(request, name.rsplit(".", 1)[1]))
    for name, (field, _) in cases.items():
        outcome, path = answer(service, name)
        assert outcome == "rejected", name
        error = path.read_text(encoding="utf-8")
        assert error.startswith(f"{name}: {field}: ") and "relative path" in error and "absolute" in error, error
    assert service.journal.counts() == {}


# -- problems that used to surface only when the job ran ------------------------------------------------------
VAST_LAYER = {"host": "10.0.12.34", "port": 22081, "layer": "EM"}


def late_problems(data: Path) -> dict[str, tuple[dict, str, list[str]]]:
    """name: (request, where the error starts, what it must say)."""
    predict = valid_request("predict", data)
    return {
        "mapping": (valid_request("train", data) | {"mapping": "isbl"}, "train.mapping: ",
                    ["unknown label mapping 'isbl'", "choose one of isbi, classes"]),
        "finetune-mapping": (valid_request("finetune", data) | {"mapping": "ISBI"}, "finetune.mapping: ",
                             ["unknown label mapping 'ISBI'", "membrain-patches-2"]),
        "mapping-pairs": (valid_request("train", data) | {"mapping": "0=2,255=7"}, "train.mapping: ",
                          ["in '255=7', 7 is no class", "1 interior, 2 membrane"]),
        "h": (valid_request("segment2d", data) | {"h": 1.5}, "segment2d.h: ", ["less than or equal to 1"]),
        "vast-image": (predict | {"volume": VAST_LAYER, "target": {"mode": "image"}}, "predict: ",
                       ["target.mode 'image'", "volume is a VAST layer", "'box', 'anchors' or 'volume'"]),
        "vast-address": (predict | {"volume": "vast://10.0.12.34:22081/EM"}, "predict.volume: ",
                         ["'vast://10.0.12.34:22081/EM' is a VAST address", 'volume = {host = "HOST"']),
    }  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_problems_that_showed_only_when_running_are_refused_at_submit(tmp_path, fmt):
    for name, (request, where, words) in late_problems(tmp_path / "data").items():
        path = tmp_path / f"{name}.{fmt}"
        path.write_bytes(encode(request, fmt))
        with pytest.raises(RequestError) as info:
            read_request(path)
        message = str(info.value)
        assert message.startswith(f"invalid request: {where}"), message
        assert all(word in message for word in words), message
    fixed = {  # what each message points to is accepted
        "mapping": valid_request("train", tmp_path) | {"mapping": "isbi"},
        "mapping-pairs": valid_request("train", tmp_path) | {"mapping": "0=2,255=1,128=0"},
        "h": valid_request("segment2d", tmp_path) | {"h": 1.0},
        "vast-box": valid_request("predict", tmp_path) | {"volume": VAST_LAYER},
    }
    for name, request in fixed.items():
        path = tmp_path / f"ok-{name}.{fmt}"
        path.write_bytes(encode(request, fmt))
        assert read_request(path).spec.kind == request["kind"]


def test_late_problems_are_rejected_by_the_request_folder(service):
    for name, (request, _, _) in late_problems(service.data).items():
        drop(service.path, f"{name}.json", encode(request, "json"))
    for name, (_, where, words) in late_problems(service.data).items():
        outcome, path = answer(service, f"{name}.json")
        assert outcome == "rejected", name
        error = path.read_text(encoding="utf-8")
        assert error.startswith(f"{name}.json: invalid request: {where}") and words[0] in error, error
    assert service.journal.counts() == {}


@pytest.mark.isbi
def test_episodic_finetuning_from_a_parent_trained_outside_the_roots_is_refused(service, isbi, tmp_path):
    from membraind.jobs.execute import run_train
    from membraind.jobs.specs import FinetuneSpec, TrainSpec
    from membraind.service.job import Job
    from membraind.volumes.image_files import read_image, write_image

    lab_gt = tmp_path / "lab-gt"  # beside the daemon's home: outside its roots
    for name in ("00", "01", "02"):
        for kind in ("image", "label"):
            write_image(lab_gt / kind / f"{name}.png", read_image(isbi / "train" / kind / f"{name}.png")[:128, :128])
    tiny = Settings.model_validate({
        "unet": {"depth": 2, "base_filters": 4}, "sampler": {"patch_size": 64},
        "training": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 2, "device": "cpu"},
    })  # fmt: skip
    parent_run = service.data / "runs" / "parent"  # the parent bundle itself lies inside the roots
    result = run_train(TrainSpec(em=lab_gt / "image", labels=lab_gt / "label", mapping="isbi", out=parent_run),
                       tiny, lambda report: None, lambda: False)  # fmt: skip
    parent = Path(result.outputs[0])
    finetune = valid_request("finetune", service.data) | {"parent": str(parent), "mapping": "isbi"}
    drop(service.path, "episodic.json", encode(finetune | {"mode": "episodic"}, "json"))
    drop(service.path, "leaky.json", encode(finetune | {"mode": "leaky"}, "json"))  # replays nothing: fine
    outcome, error_file = answer(service, "episodic.json")
    assert outcome == "rejected"
    error = error_file.read_text(encoding="utf-8")
    assert error.startswith(f"episodic.json: parent: episodic fine-tuning replays the training data of bundle {parent}")
    assert f"its em {(lab_gt / 'image').resolve()} is outside the folders this daemon may use" in error, error
    assert answer(service, "leaky.json")[0] == "accepted"

    # The configured mode counts when the request names none; an unreadable parent is left to the job.
    settings = Settings.model_validate({"service": {"home": str(service.home)}, "transfer": {"mode": "episodic"}})
    episodic_default = Dispatcher(settings.service, settings.transfer, service.journal, JobQueues(open_hueys(settings.service)))
    spec = FinetuneSpec(**{k: v for k, v in finetune.items() if k not in ("kind", "mode", "leaky_factor")})
    with pytest.raises(MembraindError, match="parent: episodic fine-tuning replays"):
        episodic_default.submit(Job(id="default-mode", spec=spec))
    missing = spec.model_copy(update={"parent": service.data / "models" / "not-there"})
    assert episodic_default.submit(Job(id="missing-parent", spec=missing))[1] is True


# -- accepted requests --------------------------------------------------------------------------------
def test_valid_requests_are_accepted_queued_and_journaled(service):
    requests = {
        "predict-box.json": valid_request("predict", service.data) | {"id": "hippo-box-1"},
        "seg.toml": valid_request("segment2d", service.data) | {"id": "seg-1", "priority": -5},
        "no-id.json": valid_request("export-onnx", service.data),
    }
    for name, request in requests.items():
        drop(service.path, name, encode(request, name.rsplit(".", 1)[1]))
    ids = {}
    for name, request in requests.items():
        outcome, status_file = answer(service, name)
        assert outcome == "accepted", status_file
        assert (service.path / "accepted" / name).exists() and not (service.path / name).exists()
        status = json.loads(status_file.read_text(encoding="utf-8"))
        assert status["state"] == "queued" and status["kind"] == request["kind"] and "note" not in status
        assert "id" in request or len(status["id"]) == 32
        assert status["id"] == request.get("id", status["id"])
        record = service.journal.get(status["id"])
        assert record is not None and record.state == "queued" and record.source == "request-file"
        assert record.client == str(service.path / "accepted" / name)
        assert record.spec == record.job().spec.model_dump(mode="json")
        ids[name] = status["id"]
    assert service.journal.get("seg-1").priority == -5
    assert service.journal.get("hippo-box-1").priority == 10
    assert service.journal.counts() == {"queued": 3}
    assert service.dispatcher.queues.pending() == {"gpu": 1, "cpu": 2}
    assert not (service.path / "rejected").exists()
    assert service.folder.folder.healthy() is True


def test_same_id_twice_gives_one_job(service):
    request = valid_request("train", service.data) | {"id": "train-once"}
    drop(service.path, "first.json", encode(request, "json"))
    assert answer(service, "first.json")[0] == "accepted"
    drop(service.path, "again.toml", encode(request | {"epochs": 9}, "toml"))
    outcome, status_file = answer(service, "again.toml")
    assert outcome == "accepted"
    status = json.loads(status_file.read_text(encoding="utf-8"))
    assert status["id"] == "train-once" and status["state"] == "queued"
    assert "submitted before" in status["note"]
    first = json.loads((service.path / "accepted" / "first.json.status.json").read_text(encoding="utf-8"))
    assert "note" not in first
    # The same name once more: it is kept too, under a time-stamped name.
    drop(service.path, "first.json", encode(request, "json"))
    accepted = service.path / "accepted"
    wait_until(lambda: not (service.path / "first.json").exists() and len(list(accepted.glob("first*.status.json"))) == 2,
               "the second first.json is accepted under a new name")  # fmt: skip
    assert len([p for p in accepted.glob("first-*.json") if not p.name.endswith(".status.json")]) == 1
    assert [r.id for r in service.journal.list(limit=None)] == ["train-once"]
    assert service.journal.get("train-once").spec["epochs"] == 3  # the first request's job
    assert service.dispatcher.queues.pending() == {"gpu": 1, "cpu": 0}
    assert [e[3] for e in service.journal.events("train-once")] == ["queued"]


# -- what a crash leaves behind, repaired at start-up -------------------------------------------------
def test_requests_accepted_as_the_daemon_stopped_are_submitted_once_at_start_up(service):
    accepted = service.path / "accepted"
    accepted.mkdir()
    # Killed after the move, before the journal had the job: the hidden name holds the job's id.
    left = accepted / ".submitting-0123456789abcdef0123456789abcdef#left.json"
    left.write_bytes(encode(valid_request("predict", service.data), "json"))
    # Killed after the journal had the job, before the file got its accepted name.
    sent = accepted / ".submitting-sent-1#sent.toml"
    sent.write_bytes(encode(valid_request("export-onnx", service.data) | {"id": "sent-1"}, "toml"))
    job = read_request(sent).model_copy(update={"client": str(accepted / "sent.toml")})
    assert service.dispatcher.submit(job)[1] is True
    # Edited by hand while the daemon was down: it gets an answer too.
    spoiled = accepted / ".submitting-spoiled-1#spoiled.json"
    spoiled.write_text('{"kind": "predict", "volume": ', encoding="utf-8")

    service.folder.recover()

    assert sorted(p.name for p in accepted.iterdir()) == ["left.json", "left.json.status.json", "sent.toml",
                                                          "sent.toml.status.json"]  # fmt: skip
    for name, job_id in [("left.json", "0123456789abcdef0123456789abcdef"), ("sent.toml", "sent-1")]:
        status = json.loads((accepted / f"{name}.status.json").read_text(encoding="utf-8"))
        assert status["id"] == job_id and status["state"] == "queued" and "note" not in status
        assert service.journal.get(job_id).client == str(accepted / name)
    assert sorted(r.id for r in service.journal.list(limit=None)) == ["0123456789abcdef0123456789abcdef", "sent-1"]
    assert [e[3] for e in service.journal.events("sent-1")] == ["queued"]
    assert service.dispatcher.queues.pending() == {"gpu": 1, "cpu": 1}  # each job queued once
    error = (service.path / "rejected" / "spoiled.json.error.txt").read_text(encoding="utf-8")
    assert error.startswith("spoiled.json: ") and "JSON" in error


def test_status_files_that_missed_the_last_change_are_brought_up_to_date_at_start_up(service):
    request = valid_request("export-onnx", service.data) | {"id": "stale-1"}
    drop(service.path, "first.json", encode(request, "json"))
    assert answer(service, "first.json")[0] == "accepted"
    drop(service.path, "again.json", encode(request, "json"))
    assert answer(service, "again.json")[0] == "accepted"
    junk = service.path / "accepted" / "junk.json.status.json"
    junk.write_text("{", encoding="utf-8")
    # The job ran and ended; the process was killed before it could write the status file.
    assert service.journal.claim("stale-1", "host-gpu0", 60.0) is not None
    assert service.journal.finish("stale-1", JobResult(outputs=[str(service.data / "m1.onnx")], summary="exported"),
                                  "host-gpu0")  # fmt: skip
    first = service.path / "accepted" / "first.json.status.json"
    assert json.loads(first.read_text(encoding="utf-8"))["state"] == "queued"

    service.folder.recover()

    status = json.loads(first.read_text(encoding="utf-8"))
    assert status["state"] == "done" and status["result"]["summary"] == "exported"
    again = json.loads((service.path / "accepted" / "again.json.status.json").read_text(encoding="utf-8"))
    assert again["state"] == "queued" and "submitted before" in again["note"]  # a snapshot, as documented
    assert junk.read_text(encoding="utf-8") == "{"


def test_status_file_times_are_iso_8601_with_the_time_zone(service):
    request = valid_request("export-onnx", service.data) | {"id": "times-1"}
    drop(service.path, "times.json", encode(request, "json"))
    kind, status_file = answer(service, "times.json")
    assert kind == "accepted"
    assert service.journal.claim("times-1", "host-gpu0", 60.0) is not None
    assert service.journal.finish("times-1", JobResult(outputs=[], summary="exported"), "host-gpu0")
    service.folder.recover()  # the journal changed behind the dispatcher's back: bring the file up to date
    status = json.loads(status_file.read_text(encoding="utf-8"))
    record = service.journal.get("times-1")
    for name in ("created", "started", "finished", "updated"):
        shown = datetime.fromisoformat(status[name])
        assert shown.utcoffset() is not None, f"{name} has no time zone: {status[name]}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", status[name]), status[name]
        assert abs(shown.timestamp() - getattr(record, name)) < 0.001


def test_requests_that_find_the_journal_locked_wait_and_are_queued_when_it_answers(tmp_path):
    home = tmp_path / "home"
    data = home / "data"
    data.mkdir(parents=True)
    settings = Settings.model_validate({"service": {"home": str(home)}})
    journal = SqliteJournal(tmp_path / "journal.db", timeout=0.2)
    dispatcher = Dispatcher(settings.service, settings.transfer, journal, JobQueues(open_hueys(settings.service)))
    folder = RequestFolder(settings.service.requests_path(), dispatcher.submit, journal.get, polling=False, rescan_seconds=5.0)
    dispatcher.add_listener(folder.on_job)
    folder.path.mkdir(parents=True)
    locker = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the journal's write lock for longer than its timeout
        for _ in range(2):  # two requests of the same name: each keeps a name of its own
            assert folder.handle(drop(folder.path, "a.json", encode(valid_request("train", data), "json"))) is True
        assert folder.waiting and not (folder.path / "a.json").exists()
        waiting = sorted(p.name for p in folder.accepted.iterdir())
        assert len(waiting) == 2 and all(name.startswith(".submitting-") for name in waiting)
        folder.submit_waiting()  # still locked: both keep waiting
        assert folder.waiting and sorted(p.name for p in folder.accepted.iterdir()) == waiting
        locker.execute("ROLLBACK")
        folder.submit_waiting()
        assert not folder.waiting
        names = sorted(p.name for p in folder.accepted.iterdir())
        assert len(names) == 4 and names[0].startswith("a-") and names[2] == "a.json"
        assert [n for n in names if n.endswith(".status.json")] == [names[0] + ".status.json", "a.json.status.json"]
        records = journal.list(limit=None)
        assert sorted(r.client for r in records) == [str(folder.accepted / n) for n in names if not n.endswith(".status.json")]
        assert sorted(r.id for r in records) == sorted(name.split("#")[0][len(".submitting-"):] for name in waiting)
        assert all(r.state == "queued" for r in records) and dispatcher.queues.pending() == {"gpu": 2, "cpu": 0}
    finally:
        locker.close()
        journal.close()


def test_a_name_too_long_to_keep_beside_its_status_is_rejected_with_an_answer(service):
    valid = "predict-" + "x" * 230 + ".json"
    invalid = "broken-" + "y" * 240 + ".json"
    drop(service.path, valid, encode(valid_request("predict", service.data), "json"))
    drop(service.path, invalid, b'{"kind": ')
    rejected = service.path / "rejected"
    wait_until(lambda: len(list(rejected.glob("*.error.txt"))) == 2, "both long names are answered")
    errors = {p.name: p.read_text(encoding="utf-8") for p in rejected.glob("*.error.txt")}
    assert sorted(errors) == ["broken-" + "y" * 93 + "....json.error.txt", "predict-" + "x" * 92 + "....json.error.txt"]
    assert errors[sorted(errors)[1]].startswith(f"{valid}: the file name is 243 bytes long, too long")
    assert "at most 187 bytes" in errors[sorted(errors)[1]]
    assert errors[sorted(errors)[0]].startswith(f"{invalid}: ") and "JSON" in errors[sorted(errors)[0]]
    assert sorted(p.name for p in rejected.iterdir() if not p.name.endswith(".error.txt")) == [
        n[: -len(".error.txt")] for n in sorted(errors)]  # fmt: skip
    assert service.journal.counts() == {} and list(service.path.glob("*.json")) == []


def test_the_longest_name_allowed_is_accepted_twice_with_its_status_files(service):
    name = "p" * (187 - len(".json")) + ".json"  # the longest a request with a 32-character id may have
    for _ in range(2):  # the second is accepted under a time-stamped name, 23 bytes longer
        drop(service.path, name, encode(valid_request("predict", service.data), "json"))
        wait_until(lambda: not (service.path / name).exists(), f"{name} is taken")
    accepted = service.path / "accepted"
    wait_until(lambda: len(list(accepted.glob("*.status.json"))) == 2, "both status files are written")
    assert sorted(len(p.name) for p in accepted.iterdir()) == [187, 187 + 12, 187 + 23, 187 + 23 + 12]
    assert service.journal.counts() == {"queued": 2} and not (service.path / "rejected").exists()


def test_requests_wait_in_place_while_the_daemon_cannot_move_them_and_are_answered_after(service, caplog):
    # A file where the daemon needs a folder: moving requests into it fails as on a share without write access.
    for blocked in ("accepted", "rejected"):
        (service.path / blocked).write_text("in the way", encoding="utf-8")
    started = time.monotonic()
    drop(service.path, "good.json", encode(valid_request("predict", service.data) | {"id": "good-1"}, "json"))
    drop(service.path, "bad.json", b'{"kind": "predict"}')
    wait_until(lambda: caplog.text.count("trying again at the next rescan") >= 2, "both failures are logged")
    assert "request good.json cannot be moved to" in caplog.text and "create and rename files there" in caplog.text
    assert (service.path / "good.json").exists() and (service.path / "bad.json").exists()
    assert service.journal.counts() == {}
    tries = 2 + int((time.monotonic() - started) / 5.0)  # the first, then one per rescan (every 5 s here)
    for blocked in ("accepted", "rejected"):
        (service.path / blocked).unlink()
    assert answer(service, "good.json")[0] == "accepted"  # at the next rescan
    assert answer(service, "bad.json")[0] == "rejected"
    assert service.journal.get("good-1").state == "queued"
    assert caplog.text.count("request good.json cannot be moved") <= tries  # per rescan, not every half second


def test_a_prediction_for_a_vast_that_cannot_see_its_output_is_refused_at_submit(tmp_path):
    from membraind.service.job import job_from_request

    home = tmp_path / "home"
    (home / "shared").mkdir(parents=True)
    watch = {"host": "10.0.0.5", "port": 22081, "anchor_layers": ["anchors"], "bundles": [str(home / "m")],
             "out": str(home / "shared" / "anchors"), "paths": [{"daemon": str(home / "shared"), "vast": "Z:\\lab"}]}  # fmt: skip
    settings = Settings.model_validate({"service": {"home": str(home), "vast": [watch]}})
    journal = SqliteJournal(tmp_path / "journal.db")
    dispatcher = Dispatcher(settings.service, settings.transfer, journal, JobQueues(open_hueys(settings.service)))
    request = {"kind": "predict", "volume": {"host": "10.0.0.5", "port": 22081}, "bundles": [str(home / "m")],
               "target": {"mode": "box", "box": {"x0": 0, "x1": 512, "y0": 0, "y1": 512, "z0": 0, "z1": 2}}}  # fmt: skip
    try:
        with pytest.raises(MembraindError, match=r"out: the results are to be shown in the VAST at 10.0.0.5:22081, but "
                                                 r".*/home/private lies outside the folders VAST can see"):  # fmt: skip
            dispatcher.submit(job_from_request(request | {"out": str(home / "private")}, source="zmq"))
        record, created = dispatcher.submit(job_from_request(request | {"out": str(home / "shared" / "p")}, source="zmq"))
        assert created and record.state == "queued"
        # Not shown in VAST: no mapping needed.
        assert dispatcher.submit(job_from_request(request | {"out": str(home / "private"), "show_in_vast": False},
                                                  source="zmq"))[1]  # fmt: skip
        assert journal.counts() == {"queued": 2}
    finally:
        journal.close()


def test_a_train_request_for_a_lab_model_claims_its_next_version_once(service):
    from membraind.service.job import job_from_request

    request = valid_request("train", service.data) | {"model": "octopus-vl", "id": "lab-1"}
    del request["out"]
    record, created = service.dispatcher.submit(job_from_request(request, source="zmq"))
    models = service.home / "models" / "octopus-vl"
    assert created and record.spec["out"] == str(models / "v1")
    _, created = service.dispatcher.submit(job_from_request(request, source="zmq"))  # the same job again
    assert not created and sorted(p.name for p in models.iterdir()) == ["v1"]
    del request["id"]
    record, _ = service.dispatcher.submit(job_from_request(request, source="zmq"))
    assert record.spec["out"] == str(models / "v2") and record.job().spec.version == 2
    with pytest.raises(MembraindError, match="model name 'no/slash'"):
        job_from_request(request | {"model": "no/slash"}, source="zmq")


def test_an_import_request_for_a_lab_model_claims_its_next_version_once(service):
    request = valid_request("import-model", service.data) | {"model": "octopus-vl"}
    del request["out"]
    drop(service.path, "import.toml", encode(request, "toml"))
    outcome, status_file = answer(service, "import.toml")
    assert outcome == "accepted", status_file.read_text()
    record = service.journal.get(json.loads(status_file.read_text(encoding="utf-8"))["id"])
    assert record.spec["out"] == str(service.home / "models" / "octopus-vl" / "v1") and record.job().spec.version == 1
    assert record.job().spec.bundle == service.home / "models" / "octopus-vl" / "v1" / "model"


def test_a_paint_request_outside_the_roots_is_refused(service):
    request = valid_request("vast-paint", service.data) | {"membrane": str(service.tmp / "elsewhere")}
    drop(service.path, "paint.json", encode(request, "json"))
    outcome, error = answer(service, "paint.json")
    assert outcome == "rejected" and "membrane: " in error.read_text() and "outside the folders" in error.read_text()
