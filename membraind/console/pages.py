"""What each console page shows, read from the daemon's journal, its models folder and
the tile stores jobs wrote. Plain data for the templates; no web framework here.

The journal is the one the ZeroMQ API answers from, read through the same methods
(``counts``, ``list``, ``find``, ``events``), so the console and ``membraind status``
never disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from membraind.console.charts import learning_curve_svg, read_history
from membraind.errors import InputError
from membraind.nn.versions import lab_models, parent_name, version_of
from membraind.service.job import JobRecord
from membraind.service.journal.base import Journal
from membraind.service.settings import ServiceSettings

__all__ = [
    "Sources", "STATES", "overview", "job_list", "job_page", "models_page", "model_page", "describe_age",
    "LIST_LIMIT",
]  # fmt: skip

STATES = ("queued", "running", "done", "failed", "cancelled")
LIST_LIMIT = 100  # jobs on one page of the list
SCOPE_WINDOW = 600.0  # seconds over which arrival and prediction rates are counted
SCOPE_RECENT = 300  # most recent jobs looked at for the scope folders' rates


@dataclass
class Sources:
    """Where the console reads from: the daemon's own journal and settings."""

    journal: Journal
    service: ServiceSettings
    device: Callable[[], str | None] = lambda: None
    started: float = field(default_factory=time.time)

    @property
    def models_dir(self) -> Path:
        """The lab's models folder."""
        return self.service.models_path()


def describe_age(seconds: float) -> str:
    """``12 s``, ``5 min``, ``3 h``, ``2 days`` (for "ago" and "left")."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def overview(sources: Sources) -> dict[str, Any]:
    """The overview page: queue counts, running jobs, device, scope folders, VASTs, recent errors."""
    journal, service = sources.journal, sources.service
    running = journal.list(states=("running",), limit=20)
    counts = journal.counts()
    workers: dict[str, list[JobRecord]] = {}
    for record in running:
        workers.setdefault(record.worker or "?", []).append(record)
    return {
        "counts": {state: counts.get(state, 0) for state in STATES},
        "running": running,
        "queued": journal.list(states=("queued",), limit=5, oldest_first=True),
        "errors": journal.list(states=("failed",), limit=5),
        "device": sources.device() or (f"jobs run on `membraind worker` processes ({service.queue.backend} queue)"),
        "workers": workers if service.queue.backend == "redis" else {},
        "scope": _scope_rates(sources) if service.scope else [],
        "vast": [
            {"address": f"{w.host}:{w.port}", "em": w.em_layer, "anchors": ", ".join(w.anchor_layers),
             "ground_truth": w.ground_truth_layer if w.learn else "", "model": w.model or ", ".join(map(str, w.bundles))}
            for w in service.vast
        ],  # fmt: skip
        "uptime": describe_age(time.time() - sources.started),
    }


def _scope_rates(sources: Sources) -> list[dict[str, Any]]:
    """Per scope folder: tiles arrived and predicted per minute (last 10 min), and the lag."""
    now = time.time()
    recent = [r for r in sources.journal.list(limit=SCOPE_RECENT) if r.source == "scope"]
    rows = []
    for watch in sources.service.scope:
        folder = str(watch.folder)
        mine = [r for r in recent if str(r.spec.get("volume", "")).startswith(folder)]
        arrived = sum(1 for r in mine if r.created >= now - SCOPE_WINDOW)
        predicted = sum(1 for r in mine if r.state == "done" and (r.finished or 0) >= now - SCOPE_WINDOW)
        waiting = [r.created for r in mine if r.state in ("queued", "running")]
        rows.append({
            "folder": folder, "arrived": arrived / (SCOPE_WINDOW / 60), "predicted": predicted / (SCOPE_WINDOW / 60),
            "waiting": len(waiting), "lag": describe_age(now - min(waiting)) if waiting else "none",
        })  # fmt: skip
    return rows


def job_list(sources: Sources, state: str | None = None, kind: str | None = None, limit: int = LIST_LIMIT) -> dict[str, Any]:
    """The jobs page: newest first, optionally of one state and one kind."""
    states = (state,) if state in STATES else None
    if kind:  # the journal filters by state; a kind is picked from a longer stretch
        records = [r for r in sources.journal.list(states=states, limit=limit * 10) if r.kind == kind][:limit]
    else:
        records = sources.journal.list(states=states, limit=limit)
    return {"jobs": records, "state": state or "", "kind": kind or "", "counts": sources.journal.counts()}


def _curve(run: Path | None, models_dir: Path) -> tuple[str, int]:
    """(the learning curve SVG of the run folder ``run``, its number of epochs)."""
    if run is None:
        return "", 0
    version = version_of(run / "model", models_dir)
    record = version.record() if version is not None else _read_model_json(run / "model")
    kept = (record.get("outcome") or {}).get("kept_epoch")
    history = read_history(run, record.get("history") or [])
    return learning_curve_svg(history, kept), len(history)


def _read_model_json(bundle: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def job_page(sources: Sources, job_id: str) -> dict[str, Any] | None:
    """A job's page: what was asked, progress, messages, outputs, error; None when unknown.

    Raises InputError when ``job_id`` is the start of several ids."""
    record = sources.journal.find(job_id)
    if record is None:
        return None
    events = sources.journal.events(record.id)[-50:]  # its history of states; a job retried forever stays readable
    run = record.spec.get("out") if record.kind in ("train", "finetune") else None
    curve, epochs = _curve(Path(run) if run else None, sources.models_dir)
    detail = record.progress_detail
    return {
        "job": record,
        "spec": _spec_rows(record.spec),
        "events": [{"state": e[3], "time": e[4], "detail": e[5]} for e in events],
        "curve": curve,
        "epochs": epochs,
        "eta": detail.eta if detail is not None else "",
        "counts": detail.counts if detail is not None else "",
        "lookable": record.kind == "predict" and record.state == "done",
        "what_to_do": _what_to_do(record),
    }


def _spec_rows(spec: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in spec.items():
        if value is None or value == [] or key == "kind":
            continue
        if isinstance(value, dict):
            rows += _spec_rows(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


def _what_to_do(record: JobRecord) -> str:
    if record.state != "failed":
        return ""
    return ("The message above names what was wrong and what to do. If the request itself was wrong (a path, a "
            "value), make a new job with the corrected value; if the cause is mended now (a full disk was cleared, "
            "a VAST was started), press Re-run: it runs the same request again.")  # fmt: skip


def models_page(sources: Sources) -> dict[str, Any]:
    """The models page: every lab model and its versions."""
    return {"models": {name: [_version_row(v) for v in reversed(versions)]
                       for name, versions in lab_models(sources.models_dir).items()}}  # fmt: skip


def model_page(sources: Sources, name: str) -> dict[str, Any] | None:
    """One lab model: each version with its lineage, scores and learning curve; None if unknown."""
    try:
        versions = lab_models(sources.models_dir).get(name)
    except InputError:
        return None
    if not versions:
        return None
    rows = []
    for version in reversed(versions):
        row = _version_row(version)
        row["curve"], _ = _curve(version.run, sources.models_dir)
        rows.append(row)
    return {"name": name, "versions": rows}


def _version_row(version) -> dict[str, Any]:
    record = version.record()
    outcome = record.get("outcome") or {}
    parent = record.get("parent")
    transfer = (record.get("training") or {}).get("transfer") or {}
    return {
        "name": f"{version.model}@v{version.version}", "version": version.version, "bundle": str(version.bundle),
        "ready": version.ready, "created": record.get("created", ""),
        "parent": parent_name(parent, version.run.parent.parent) if parent else "trained afresh",
        "mode": transfer.get("mode", "") if isinstance(transfer, dict) else "",
        "f1": outcome.get("kept_val_membrane_f1"), "epochs": outcome.get("last_epoch"),
        "state": "training" if record and not version.ready else ("ready" if version.ready else "no epoch yet"),
    }
