"""Requests may only read and write under the configured roots (docs/design-notes.md, "Paths and trust"),
and results shown in VAST must lie where that VAST can see them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel

from membraind.errors import InputError
from membraind.jobs.specs import FinetuneSpec, PredictSpec
from membraind.nn.bundle_layout import read_metadata_json
from membraind.predict.request import VastSource, paths_for
from membraind.vast.paths import PathMap, vast_path

__all__ = ["check_paths", "check_parent_data", "check_vast_paths", "paths_of"]


def paths_of(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Every path in ``model`` (nested models and lists too), with its dotted field name."""
    for name in type(model).model_fields:
        yield from _paths(getattr(model, name), f"{prefix}{name}")


def _paths(value: Any, where: str) -> Iterator[tuple[str, Path]]:
    if isinstance(value, Path):
        yield where, value
    elif isinstance(value, PathMap):
        return  # names where VAST sees a folder; nothing is read or written there
    elif isinstance(value, BaseModel):
        yield from paths_of(value, where + ".")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _paths(item, f"{where}[{i}]")


def _allowed(path: Path, roots: list[Path]) -> bool:
    resolved = path.resolve()  # follows symlinks, so a link cannot lead outside
    return any(resolved == root or root in resolved.parents for root in roots)


def _roots_text(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots)


def check_paths(spec: BaseModel, roots: list[Path]) -> None:
    """Raise an :class:`InputError` naming every path of ``spec`` that is relative or outside ``roots``."""
    problems = [problem for field, path in paths_of(spec) if (problem := _path_problem(field, path, roots))]
    if problems:
        raise InputError("; ".join(problems))


def _path_problem(field: str, path: Path, roots: list[Path]) -> str | None:
    """What is wrong with ``path`` (field ``field``) for this daemon, or None."""
    if not path.is_absolute():
        return f"{field}: {str(path)!r} is a relative path; give an absolute path"
    try:
        allowed = _allowed(path, roots)
    except (OSError, RuntimeError) as exc:  # a symlink loop, a NUL byte
        return f"{field}: {str(path)!r} cannot be resolved ({exc})"
    if not allowed:
        return (f"{field}: {path} is outside the folders this daemon may use ({_roots_text(roots)}); "
                "move the data there or ask the administrator to add a root ([service] roots)")  # fmt: skip
    return None


def check_parent_data(spec: BaseModel, default_mode: str, roots: list[Path]) -> None:
    """Refuse episodic fine-tuning whose parent was trained on data outside ``roots``.

    Episodic fine-tuning replays the parent bundle's training data, whose paths only the
    parent's metadata names. ``default_mode`` is the configured transfer mode (used when
    the spec names none). A parent that cannot be read is left to the job, which says why.
    """
    if not isinstance(spec, FinetuneSpec) or (spec.mode or default_mode) != "episodic":
        return
    for name, path in _training_data(spec.parent):
        try:
            allowed = _allowed(path, roots)
        except (OSError, RuntimeError):
            allowed = False
        if not allowed:
            raise InputError(
                f"parent: episodic fine-tuning replays the training data of bundle {spec.parent}, but its {name} "
                f"{path} is outside the folders this daemon may use ({_roots_text(roots)}); move that data there, "
                "ask the administrator to add a root ([service] roots), or choose another mode (e.g. leaky)"
            )


def _training_data(bundle: Path) -> list[tuple[str, Path]]:
    """(what, path) of each training data path a bundle's metadata records; [] when it cannot be read."""
    try:
        metadata = read_metadata_json(bundle)
        return [(key, Path(source[key])) for source in metadata["training"]["data"] for key in ("em", "labels")]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def check_vast_paths(spec: BaseModel, configured: Callable[[str, int], list[PathMap]]) -> None:
    """Refuse a prediction whose results are to be shown in a VAST that cannot see its output
    folder through its path mapping (see :mod:`membraind.vast.paths`): said now, not by VAST later."""
    if isinstance(spec, PredictSpec) and isinstance(spec.volume, VastSource) and spec.show_in_vast:
        try:
            vast_path(spec.out, paths_for(spec.volume, configured))
        except InputError as exc:
            raise InputError(f"out: the results are to be shown in the VAST at {spec.volume.host}:{spec.volume.port}, "
                             f"but {exc}") from None  # fmt: skip
