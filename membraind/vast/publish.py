"""Showing tile stores in VAST: load each store's ``.vsvi`` once, then refresh what changed.

VAST is handed each file's path as VAST sees it (:mod:`membraind.vast.paths`): on a
Windows workstation, through the mapped drive or share that holds the daemon's folder.

Which VAST layer a store became is remembered in a small JSON file, so a daemon restart
does not load the same layer twice. A remembered layer is checked by name before use: if
the user removed or reordered layers, the store is looked up by name or loaded again.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from membraind.atomic import write_text_atomic
from membraind.strict import StrictModel
from membraind.vast.client import VastClient
from membraind.vast.paths import PathMap, vast_path
from membraind.vast.protocol import VastError, VastRefused
from membraind.volumes.box import Box

__all__ = ["LayerPublisher", "show_prediction_in_vast", "VAST_LAYERS_FILE"]

VAST_LAYERS_FILE = ".vast-layers.json"  # in a prediction's output folder: which layer each store became


class _Loaded(StrictModel):
    layer: int
    name: str


class _State(StrictModel):
    layers: dict[str, _Loaded] = {}  # resolved .vsvi path -> the VAST layer it became


class LayerPublisher:
    """Loads tile stores into the VAST behind ``client`` and refreshes their changed regions."""

    def __init__(self, client: VastClient, state_path: Path, paths: list[PathMap] | None = None) -> None:
        self.client, self.state_path, self.paths = client, Path(state_path), paths or []
        try:
            self.state = _State.model_validate_json(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError):
            self.state = _State()  # no or unreadable record: at worst the layer is loaded once more

    def publish(self, vsvi: Path, region: Box | None = None) -> int:
        """Make ``vsvi``'s layer show its current tiles; returns its VAST layer number.

        The first time the file is loaded as a new layer (LOADLAYER); later calls only ask
        VAST to re-read ``region`` (the store's mip-0 box; None = nothing to refresh).
        """
        key = str(Path(vsvi).resolve())
        known = self.state.layers.get(key)
        layer = self._find(known) if known else None
        if layer is None:
            layer = self._load(key)
            self.state.layers[key] = _Loaded(layer=layer, name=self.client.layer_info(layer).name)
            self._save()
            return layer
        if region is not None:
            self.client.refresh_layer_region(layer, region)
        return layer

    def _load(self, path: str) -> int:
        where = vast_path(path, self.paths)
        try:
            return self.client.load_layer(where)
        except VastRefused as exc:
            hint = "" if self.paths else (
                "; if VAST runs on another machine (Windows), tell membraind where VAST sees this folder: "
                "[[service.vast]] paths in the configuration, or --vast-path DAEMON=VAST"
            )  # fmt: skip
            raise VastError(f"{exc}{hint}") from None

    def _find(self, known: _Loaded) -> int | None:
        try:
            if self.client.layer_info(known.layer).name == known.name:
                return known.layer
        except VastRefused:
            pass  # that layer number no longer exists
        for number, info in enumerate(self.client.layers()):
            if info.name == known.name:
                known.layer = number
                self._save()
                return number
        return None

    def _save(self) -> None:
        write_text_atomic(self.state_path, self.state.model_dump_json(indent=2))


def show_prediction_in_vast(
    host: str, port: int, out: Path, stores: list[Path], region: Box | None, paths: list[PathMap] | None = None
) -> list[int]:
    """Load each predicted store into the VAST at ``host:port`` (once, through the path
    mapping ``paths``), or refresh ``region`` (any mip; VAST is asked in mip-0 voxels) of
    layers loaded before; returns the layer numbers."""
    with VastClient(host, port) as client:
        publisher = LayerPublisher(client, Path(out) / VAST_LAYERS_FILE, paths)
        return [publisher.publish(vsvi, region) for vsvi in stores]
