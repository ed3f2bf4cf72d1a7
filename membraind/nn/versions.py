"""Lab models with versions: ``<models>/<name>/v1``, ``v2``, ... each a training run folder.

A lab model (``octopus-vl``) is what a lab thinks of as "the membrane model"; its
versions are the runs that trained it, each fine-tuned from the one before or trained
afresh. A version's folder is its run folder (checkpoint, history, learning curve) and
its bundle is ``model/`` inside, written when the first epoch finishes and updated while
training goes on. A version is *ready* (used as "latest") once its training has stopped:
a version still training, or one that failed before its first epoch, is never "latest",
so nothing is predicted with weights that are about to change.

A version number is claimed by creating its folder (``mkdir`` fails for a second
claimant), so two jobs never make the same version; the daemon claims it when the job
is submitted, so a job run again after a crash resumes its own version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from membraind.errors import InputError
from membraind.nn.bundle_layout import METADATA_FILE
from membraind.strict import StrictModel

__all__ = [
    "ModelVersion", "versions", "latest_version", "claim_next_version", "check_model_name", "lab_models", "BUNDLE_DIR",
    "resolve_model", "check_model_reference", "version_of", "parent_name",
]  # fmt: skip

BUNDLE_DIR = "model"  # the bundle inside a run folder
_VERSION = re.compile(r"^v([1-9][0-9]*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ModelVersion(StrictModel):
    """One version of a lab model."""

    model: str
    version: int
    run: Path

    @property
    def bundle(self) -> Path:
        """The version's model bundle."""
        return self.run / BUNDLE_DIR

    def record(self) -> dict[str, Any]:
        """Its bundle's ``model.json`` as written ({} when there is none yet, or it is unreadable);
        read without loading the network, for listings and the daemon's polls."""
        try:
            data = json.loads((self.bundle / METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def ready(self) -> bool:
        """Whether it can be used: its bundle exists and its training has stopped (a bundle
        recording no training outcome, e.g. an imported network, is ready as it is)."""
        record = self.record()
        if not record:
            return False
        outcome = record.get("outcome")
        return not isinstance(outcome, dict) or outcome.get("stopped") is not None


def check_model_name(name: str) -> str:
    """``name`` if it can name a lab model (a folder name on every system), else an InputError."""
    if not _NAME.match(name):
        raise InputError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64), e.g. octopus-vl")
    return name


def versions(models: Path, name: str) -> list[ModelVersion]:
    """Every version of lab model ``name`` under ``models``, oldest first (ready or not)."""
    folder = Path(models) / check_model_name(name)
    found = []
    for child in folder.iterdir() if folder.is_dir() else []:
        match = _VERSION.match(child.name)
        if match and child.is_dir():
            found.append(ModelVersion(model=name, version=int(match.group(1)), run=child))
    return sorted(found, key=lambda v: v.version)


def latest_version(models: Path, name: str, below: int | None = None) -> ModelVersion:
    """The newest version of ``name`` whose bundle exists (older than version ``below`` when
    given); an InputError saying what there is otherwise."""
    all_versions = [v for v in versions(models, name) if below is None or v.version < below]
    ready = [v for v in all_versions if v.ready]
    if not ready:
        detail = f"{len(all_versions)} version(s) still training or failed" if all_versions else "no versions"
        raise InputError(f"lab model {name!r} in {models} has no usable version yet ({detail}); train it first "
                         "(membraind train --model NAME ...)")  # fmt: skip
    return ready[-1]


def claim_next_version(models: Path, name: str) -> ModelVersion:
    """Create the folder of ``name``'s next version and return it (never the same twice)."""
    folder = Path(models) / check_model_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    number = max((v.version for v in versions(models, name)), default=0) + 1
    while True:
        try:
            (folder / f"v{number}").mkdir()
        except FileExistsError:  # another job claimed it meanwhile
            number += 1
            continue
        return ModelVersion(model=name, version=number, run=folder / f"v{number}")


def lab_models(models: Path) -> dict[str, list[ModelVersion]]:
    """Every lab model under ``models`` (a folder holding ``v<N>`` folders) and its versions."""
    found = {}
    for child in sorted(Path(models).iterdir()) if Path(models).is_dir() else []:
        if child.is_dir() and _NAME.match(child.name) and (listed := versions(models, child.name)):
            found[child.name] = listed
    return found


def resolve_model(models: Path, reference: str) -> ModelVersion:
    """The version a reference names: ``NAME`` (its latest version, now) or ``NAME@vN``."""
    name, _, version = reference.partition("@")
    if not version or version == "latest":
        return latest_version(models, name)
    match = _VERSION.match(version)
    listed = {v.version: v for v in versions(models, name)} if match else {}
    found = listed.get(int(match.group(1))) if match else None
    if found is None or not found.ready:
        have = ", ".join(f"v{n}" for n, v in listed.items() if v.ready) or "none ready"
        raise InputError(f"lab model reference {reference!r}: no such ready version in {models} ({name}: {have}); "
                         "write NAME for the latest version or NAME@vN")  # fmt: skip
    return found


def check_model_reference(reference: str) -> str:
    """``reference`` if it is ``NAME``, ``NAME@latest`` or ``NAME@vN``; else an InputError."""
    name, at, version = reference.partition("@")
    check_model_name(name)
    if at and version != "latest" and not _VERSION.match(version):
        raise InputError(f"lab model reference {reference!r}: write NAME (the latest version), NAME@latest or NAME@v3")
    return reference


def version_of(bundle: Path | str, models: Path) -> ModelVersion | None:
    """The lab model version whose bundle ``bundle`` is (under ``models``), else None."""
    path, models = Path(bundle).resolve(), Path(models).resolve()
    match = _VERSION.match(path.parent.name)
    if path.name != BUNDLE_DIR or not match or path.parent.parent.parent != models:
        return None
    return ModelVersion(model=path.parent.parent.name, version=int(match.group(1)), run=path.parent)


def parent_name(bundle: str, models: Path) -> str:
    """How people name a version's parent: ``octopus-vl v2`` for a lab model version under
    ``models``, ``starter`` for the starter model, else the bundle's path."""
    from membraind.nn.starter import STARTER_DIR, STARTER_NAME

    if Path(bundle).resolve() == STARTER_DIR:
        return STARTER_NAME
    version = version_of(bundle, models)
    return f"{version.model} v{version.version}" if version else bundle
