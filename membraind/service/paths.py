"""Requests may only read and write under the configured roots (docs/design-notes.md, "Paths and trust")."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from membraind.errors import InputError
from membraind.jobs.specs import FinetuneSpec
from membraind.nn.bundle_layout import read_metadata_json

__all__ = ["check_paths", "check_parent_data", "paths_of"]


def paths_of(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """Every path in ``model`` (nested models and lists too), with its dotted field name."""
    for name in type(model).model_fields:
        yield from _paths(getattr(model, name), f"{prefix}{name}")


def _paths(value: Any, where: str) -> Iterator[tuple[str, Path]]:
    if isinstance(value, Path):
        yield where, value
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
    """Raise an :class:`InputError` naming the first path of ``spec`` that is relative or outside ``roots``."""
    for field, path in paths_of(spec):
        if not path.is_absolute():
            raise InputError(f"{field}: {str(path)!r} is a relative path; give an absolute path")
        try:
            allowed = _allowed(path, roots)
        except (OSError, RuntimeError) as exc:  # a symlink loop, a NUL byte
            raise InputError(f"{field}: {str(path)!r} cannot be resolved ({exc})") from None
        if not allowed:
            raise InputError(
                f"{field}: {path} is outside the folders this daemon may use ({_roots_text(roots)}); "
                "move the data there or ask the administrator to add a root ([service] roots)"
            )


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
