"""The streaming prediction pipeline: read -> normalise and infer -> write, overlapped.

A reader thread reads tiles with their context (a few sections of one tile position per
read, so slow sources such as VAST are asked for z-chunks), the calling thread runs the
runtimes, and a writer thread encodes and writes the outputs. Bounded queues between the
stages keep memory independent of the volume's size, and let reading and writing (PNG
decoding and encoding release the GIL) overlap with inference.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from membraind_client.progress import Progress, ProgressReporter, no_progress

from membraind.errors import Cancelled
from membraind.predict.models import LoadedModel
from membraind.predict.outputs import render_outputs
from membraind.predict.tiling import TileGrid, TileKey, input_size, read_with_context
from membraind.volumes.box import Box
from membraind.volumes.volume import Volume

__all__ = ["PredictionCancelled", "PredictionReport", "Sink", "predict_tiles"]

_END = object()


class PredictionCancelled(Cancelled):
    """Raised when a prediction is cancelled; finished tiles stay written."""


class Sink(Protocol):
    """Where rendered tiles go (a tile store per output, or image files)."""

    def pending(self, key: TileKey, input_mtime: float | None) -> bool:
        """True when ``key`` must be (re)computed."""

    def write(self, key: TileKey, core: Box, images: dict[tuple[str, str], np.ndarray]) -> None:
        """Store the images of one tile, keyed by (bundle name, output kind)."""

    def finish(self, planned: list[TileKey], written: list[TileKey]) -> list[Path]:
        """Complete the outputs (pyramids, descriptors); returns the output paths."""


@dataclass
class PredictionReport:
    """What a prediction did."""

    tiles: int = 0
    skipped: int = 0
    written: int = 0
    seconds: float = 0.0
    megapixels: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    mip: int = 0  # the mip predicted at: the output stores' first level
    notes: list[str] = field(default_factory=list)  # about the voxel size: where it came from, warnings

    def summary(self) -> str:
        """One line for people, the notes at its end."""
        rate = self.megapixels / self.seconds if self.seconds else 0.0
        return "; ".join([
            f"{self.written} tiles predicted, {self.skipped} already up to date, "
            f"{self.megapixels:.1f} Mpx in {self.seconds:.1f} s ({rate:.2f} Mpx/s)",
            *self.notes,
        ])  # fmt: skip


class _Stage(threading.Thread):
    """A daemon thread whose exception is re-raised in the caller by :meth:`check`."""

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn, self.error = target, None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the calling thread
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _put(q: queue.Queue, item: object, stop: threading.Event, consumer: _Stage | None = None) -> bool:
    """Put unless the pipeline is stopping; never blocks forever on a dead consumer."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            if consumer is not None:
                consumer.check()
                if not consumer.is_alive():
                    return False
    return False


def _chunks(keys: list[TileKey], z_chunk: int) -> Iterator[list[TileKey]]:
    """Keys grouped per tile position and z-chunk, so one read serves several sections."""
    by_position = sorted(keys, key=lambda k: (k.z // z_chunk, k.row, k.col, k.z))
    for _, group in itertools.groupby(by_position, key=lambda k: (k.z // z_chunk, k.row, k.col)):
        yield list(group)


def predict_tiles(
    volume: Volume,
    grid: TileGrid,
    keys: list[TileKey],
    models: list[LoadedModel],
    sink: Sink,
    *,
    context: int,
    batch_size: int = 1,
    prefetch: int = 3,
    z_chunk: int = 8,
    overwrite: bool = False,
    progress: ProgressReporter | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PredictionReport:
    """Predict ``keys`` of ``grid`` with every model, writing to ``sink``.

    Tiles the sink reports up to date are skipped (unless ``overwrite``), so an
    interrupted prediction resumes where it stopped.
    """
    progress = progress or no_progress
    cancel = cancel or (lambda: False)
    started = time.monotonic()
    report = PredictionReport(tiles=len(keys))
    todo = [k for k in keys if overwrite or sink.pending(k, volume.mtime(grid.core(k)))]
    report.skipped = len(keys) - len(todo)
    multiple = int(np.lcm.reduce([m.runtime.multiple for m in models]))
    size = input_size(grid.tile_size, context, multiple)
    stop = threading.Event()
    to_infer: queue.Queue = queue.Queue(maxsize=prefetch)
    to_write: queue.Queue = queue.Queue(maxsize=prefetch)
    written: list[TileKey] = []

    def read() -> None:
        for group in _chunks(todo, z_chunk):
            first, last = group[0], group[-1]
            core = grid.core(first)
            chunk = Box(x0=core.x0, x1=core.x1, y0=core.y0, y1=core.y1, z0=first.z, z1=last.z + 1, mip=grid.mip)
            raw = read_with_context(volume, chunk, context, size)
            for key in group:
                if not _put(to_infer, (key, grid.core(key), raw[key.z - first.z]), stop):
                    return
        _put(to_infer, _END, stop)

    def write() -> None:
        while not stop.is_set():
            try:
                item = to_write.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                return
            key, core, images = item
            sink.write(key, core, images)
            written.append(key)

    reader, writer = _Stage("predict-reader", read), _Stage("predict-writer", write)
    reader.start()
    writer.start()
    try:
        done = 0
        finished = False
        while not finished:
            batch = []
            while len(batch) < batch_size:
                item = _get(to_infer, reader)
                if item is _END:
                    finished = True
                    break
                batch.append(item)
            if not batch:
                break
            if cancel():
                raise PredictionCancelled(
                    f"prediction cancelled after {done} of {len(todo)} tiles; finished tiles are kept"
                )
            for key, core, images in _infer(batch, models, context):
                _put(to_write, (key, core, images), stop, writer)
                report.megapixels += core.voxels / 1e6
            done += len(batch)
            last = batch[-1][0]
            progress(Progress(
                phase="predicting", fraction=(report.skipped + done) / max(len(keys), 1),
                current=report.skipped + done, total=len(keys), unit="tile",
                message=f"tile {report.skipped + done}/{len(keys)} (z {last.z}, row {last.row}, col {last.col})",
            ))  # fmt: skip
        _put(to_write, _END, stop, writer)
        writer.join()
        writer.check()
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        reader.join(timeout=10)
        # A cancel or error must not return while a tile is half-written: the process
        # may exit next (the engine does on a stop), which would abandon the write.
        writer.join(timeout=60)
    report.written = len(written)
    report.outputs = sink.finish(keys, written)
    report.seconds = time.monotonic() - started
    return report


def _get(q: queue.Queue, producer: _Stage) -> object:
    """Next item, re-raising the producer's error instead of waiting for it forever."""
    while True:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            producer.check()
            if not producer.is_alive() and q.empty():
                producer.check()
                return _END


def _infer(batch: list, models: list[LoadedModel], context: int) -> list:
    """Run every model on a batch of raw tiles; returns (key, core, images) per tile."""
    results = [(key, core, {}) for key, core, _ in batch]
    for model in models:
        x = np.stack([model.normalizer.tile(raw, core, context) for _, core, raw in batch])[:, None]
        probabilities = model.runtime(x)
        for (key, core, images), p in zip(results, probabilities):
            _, h, w = core.shape
            crop = p[:, context : context + h, context : context + w]
            for kind, image in render_outputs(crop, model.membrane_channel, model.outputs).items():
                images[(model.name, kind)] = image
    return results
