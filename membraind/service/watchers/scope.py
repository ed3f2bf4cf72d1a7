"""The scope watcher: every complete image the microscope writes is predicted once.

The job id is derived from the tile's path, size and mtime, so duplicate events, the
start-up scan and the rescans all name the same job (the journal keeps one), and a tile
overwritten by a new acquisition (new size or mtime) is predicted again.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from membraind.jobs.specs import PredictSpec
from membraind.predict.request import SingleImage
from membraind.service.job import Job
from membraind.service.priority import Priority
from membraind.service.settings import ScopeWatch
from membraind.service.watchers.folder import FolderWatcher

__all__ = ["ScopeWatcher", "image_complete"]

log = logging.getLogger(__name__)


# A PNG's last chunk: length 0, type IEND, CRC. Pillow decodes a PNG without it (or with
# part of it) without complaint, so a copy missing its last bytes would pass as whole.
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def image_complete(path: Path) -> bool:
    """Whether the image at ``path`` is whole (a file still being copied is not).

    Every page of a TIFF decodes and its chain of pages ends where it says it does; a PNG
    decodes and ends with its IEND chunk; other formats decode.
    """
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _tiff_complete(path)
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            if image.format != "PNG":
                return True
        with open(path, "rb") as f:
            f.seek(-len(_PNG_END), 2)
            return f.read() == _PNG_END
    except Exception:  # any decoder complaint means "not (yet) a whole image"
        return False


def _tiff_complete(path: Path) -> bool:
    import struct

    import tifffile

    with tifffile.TiffFile(path) as tif:
        # tifffile stops quietly (with a log line) at a page whose directory was cut off, so
        # walk the chain of page directories first: each must be whole, the last link 0.
        form, fh = tif.tiff, tif.filehandle
        offset, seen = tif.pages[0].offset, set()
        while offset:
            if offset in seen:  # a loop: not an image a writer is still finishing
                return False
            seen.add(offset)
            fh.seek(offset)
            (count,) = struct.unpack(form.tagnoformat, fh.read(form.tagnosize))  # short read: struct.error
            fh.seek(offset + form.tagnosize + count * form.tagsize)
            (offset,) = struct.unpack(form.offsetformat, fh.read(form.offsetsize))
        for page in tif.pages:  # one page at a time: memory stays that of one page
            page.asarray()
    return True


class ScopeWatcher:
    """Predicts each tile arriving below ``watch.folder`` into ``watch.out`` (same relative path)."""

    def __init__(self, watch: ScopeWatch, submit, rescan_seconds: float) -> None:
        self.watch, self.submit = watch, submit
        self.folder = FolderWatcher(
            f"scope {watch.folder}", watch.folder, self.handle, watch.patterns, recursive=True, polling=watch.polling,
            poll_seconds=watch.poll_seconds, stable_seconds=watch.stable_seconds, rescan_seconds=rescan_seconds,
        )  # fmt: skip

    def job_for(self, path: Path) -> Job:
        """The prediction job of the tile at ``path`` in its current version."""
        st = path.stat()
        relative = path.resolve().relative_to(self.watch.folder.resolve())
        key = hashlib.sha1(f"{relative}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
        spec = PredictSpec(
            volume=path.resolve(), bundles=self.watch.bundles, out=self.watch.out,
            target=SingleImage(root=self.watch.folder.resolve()),
        )  # fmt: skip
        return Job(id=f"scope-{key}", spec=spec, priority=Priority.SCOPE, source="scope", client=str(relative))

    def handle(self, path: Path) -> bool:
        """Submit the tile's job once it decodes; False while it is incomplete."""
        if not image_complete(path):
            return False
        self.submit(self.job_for(path))
        return True
