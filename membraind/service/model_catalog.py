"""The catalogue of model bundles on disk that the daemon knows, for the API's ``models``
request (the networks loaded to predict are :mod:`membraind.predict.models`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from membraind_client.messages import ModelInfo

from membraind.nn.bundle_layout import METADATA_FILE, read_metadata_json

__all__ = ["find_models"]
MAX_DEPTH = 3
MAX_MODELS = 1000


def _bundles_below(folder: Path, depth: int) -> Iterable[Path]:
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    if (folder / METADATA_FILE).is_file():
        yield folder
    if depth:
        for child in children:
            yield from _bundles_below(child, depth - 1)


def _info(path: Path) -> ModelInfo | None:
    try:
        meta = read_metadata_json(path)
        return ModelInfo(
            name=str(meta.get("name") or path.name), path=str(path), created=meta.get("created"),
            classes=[str(c) for c in meta.get("class_names", [])], mip=meta.get("mip"), parent=meta.get("parent"),
            source=meta.get("source"),
        )  # fmt: skip
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # half-written or foreign: not offered


def find_models(folder: Path, also: Iterable[Path] = ()) -> list[ModelInfo]:
    """Bundles in ``folder`` (up to three levels down, so run folders count) and the ``also`` paths."""
    seen: dict[str, ModelInfo] = {}
    for path in [*_bundles_below(Path(folder), MAX_DEPTH), *also]:
        key = str(Path(path).resolve())
        if key not in seen and len(seen) < MAX_MODELS and (Path(path) / METADATA_FILE).is_file():
            info = _info(Path(path))
            if info is not None:
                seen[key] = info
    return sorted(seen.values(), key=lambda m: (m.name, m.path))
