"""FolderWatcher with real folders and real watchdog observers (inotify and polling).

Every wait is for a real condition (a recorded handle call, an idle watcher) with a
generous deadline; "no second call" is checked after a sentinel file written later has
gone through the same watcher and the watcher has nothing left to look at.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from membraind.service.watchers.folder import FolderWatcher
from membraind.service.watchers.scope import image_complete

DEADLINE = 30.0
POLL = 0.05
PATTERNS = ["*.png", "*.tif", "*.db"]  # *.db: so that Thumbs.db is left out by name, not by pattern


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE,
               also: Callable[[], object] | None = None) -> None:  # fmt: skip
    """Poll ``predicate`` every 0.05 s until it holds; fail saying ``what`` did not happen.

    ``also`` is called on every poll (e.g. the daemon's periodic health check).
    """
    deadline = time.monotonic() + timeout
    while True:
        if also is not None:
            also()
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(POLL)


class Recorder:
    """A thread-safe ``handle``: records (path, size when called) and answers via ``answer``."""

    def __init__(self, answer: Callable[[Path, int], bool] | None = None) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[Path, int]] = []
        self.answer = answer

    def __call__(self, path: Path) -> bool:
        size = path.stat().st_size
        with self.lock:
            self.calls.append((path, size))
            n = sum(1 for p, _ in self.calls if p == path)
        if self.answer is not None:
            return self.answer(path, n)
        return True

    def count(self, path: Path) -> int:
        with self.lock:
            return sum(1 for p, _ in self.calls if p == path)

    def sizes(self, path: Path) -> list[int]:
        with self.lock:
            return [s for p, s in self.calls if p == path]

    def paths(self) -> set[Path]:
        with self.lock:
            return {p for p, _ in self.calls}


def write(path: Path, size: int, chunks: int = 1, seed: int = 0) -> Path:
    """Write ``size`` deterministic bytes to ``path`` in ``chunks`` writes (one open, one close)."""
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    step = -(-size // chunks)
    with open(path, "wb") as f:
        for i in range(0, size, step):
            f.write(data[i : i + step])
            f.flush()
    return path


@pytest.fixture(params=[False, True], ids=["inotify", "polling"])
def polling(request) -> bool:
    return request.param


@pytest.fixture
def make_watcher(polling):
    """Factory of started FolderWatchers; all are stopped at the end of the test."""
    started: list[FolderWatcher] = []

    def make(folder: Path, handle, *, stable_seconds: float = 0.5, rescan_seconds: float = 3600.0,
             patterns=PATTERNS, recursive: bool = True, start: bool = True) -> FolderWatcher:  # fmt: skip
        watcher = FolderWatcher(
            "test", folder, handle, patterns, recursive=recursive, polling=polling, poll_seconds=0.2,
            stable_seconds=stable_seconds, rescan_seconds=rescan_seconds,
        )  # fmt: skip
        started.append(watcher)
        if start:
            watcher.start()
        return watcher

    yield make
    for watcher in started:
        watcher.stop()
    for watcher in started:
        assert watcher._thread is None or not watcher._thread.is_alive(), "the watcher thread did not stop"


_sentinels = itertools.count()


def wait_idle(watcher: FolderWatcher) -> None:
    """Until the watcher has nothing queued or pending, confirmed across one more loop iteration."""
    while True:
        wait_until(lambda: watcher._inbox.empty() and not watcher._pending, "the watcher is idle")
        seen = time.monotonic()
        watcher._inbox.put((watcher.folder, False))  # wake the loop, as stop() and healthy() do
        # A loop round that began after ``seen``: one busy with an event at ``seen`` has ended.
        wait_until(lambda: watcher.last_loop > seen and watcher._inbox.empty(), "the watcher loop went round once more")
        if watcher._inbox.empty() and not watcher._pending:
            return


def settle(watcher: FolderWatcher, recorder: Recorder) -> None:
    """Let everything written so far reach the watcher and be dealt with.

    A sentinel written now travels behind all earlier events (watchdog keeps their order);
    once it is handled and the watcher is idle, no call for earlier changes can still come.
    """
    sentinel = write(watcher.folder / f"zz-sentinel-{next(_sentinels)}.png", 64)
    wait_until(lambda: recorder.count(sentinel) >= 1, f"the sentinel {sentinel.name} is handled")
    wait_idle(watcher)


# -- pick-up -----------------------------------------------------------------------------
def test_files_present_before_start_are_handled_once(tmp_path, make_watcher):
    folder = tmp_path / "in"
    old = [write(folder / f"old-{i}.png", 1000 + i, seed=i) for i in range(3)]
    nested = write(folder / "sub" / "deeper" / "old.tif", 500)
    os.utime(old[0], (time.time() - 3600, time.time() - 3600))  # long quiet: no stability wait needed
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    for path in [*old, nested]:
        wait_until(lambda p=path: rec.count(p) >= 1, f"{path.name} (present before start) is handled")
    settle(watcher, rec)
    for path in [*old, nested]:
        assert rec.count(path) == 1, f"{path.name} was handled {rec.count(path)} times"
        assert rec.sizes(path) == [path.stat().st_size]


def test_many_writes_give_one_call_and_scan_adds_none(tmp_path, make_watcher, polling):
    folder = tmp_path / "in"
    rec = Recorder()
    # Generous stability: a tight write loop never pauses that long, so polling sees one version.
    watcher = make_watcher(folder, rec, stable_seconds=1.0)
    settle(watcher, rec)  # the start-up scan is over: the file below is new to the watcher
    tile = write(folder / "tile.png", 200_000, chunks=200)
    wait_until(lambda: rec.count(tile) >= 1, "tile.png is handled")
    settle(watcher, rec)
    assert rec.sizes(tile) == [200_000], "one call, on the whole file"

    # The same version again: an explicit scan, and (inotify) an open-for-writing and close
    # without a change, which sends a "closed" event for the version already handled.
    watcher.scan()
    assert tile not in watcher._pending, "the scan queued a version that was handled already"
    with open(tile, "r+b"):
        pass
    os.chmod(tile, 0o644)
    settle(watcher, rec)
    assert rec.count(tile) == 1, f"tile.png was handled {rec.count(tile)} times"


def test_file_seen_by_start_scan_and_events_is_handled_once(tmp_path, make_watcher):
    folder = tmp_path / "in"
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    # Written while the start-up scan may be running: scan and events may both see it.
    tiles = [write(folder / f"race-{i}.png", 4096, chunks=8, seed=i) for i in range(5)]
    for tile in tiles:
        wait_until(lambda t=tile: rec.count(t) >= 1, f"{tile.name} is handled")
    settle(watcher, rec)
    watcher.scan()
    assert not set(tiles) & set(watcher._pending)
    settle(watcher, rec)
    assert [rec.count(t) for t in tiles] == [1] * len(tiles)


def test_files_renamed_into_place_are_handled(tmp_path, make_watcher):
    folder = tmp_path / "in"
    elsewhere = tmp_path / "elsewhere"
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    settle(watcher, rec)
    part = write(folder / "tile.png.part", 3000)
    os.rename(part, folder / "tile.png")
    outside = write(elsewhere / "moved.png", 2000)
    os.rename(outside, folder / "moved.png")
    write(elsewhere / "sub" / "a.png", 100)
    os.rename(elsewhere / "sub", folder / "sub")  # a whole folder moved in
    for name in ["tile.png", "moved.png", "sub/a.png"]:
        wait_until(lambda n=name: rec.count(folder / n) >= 1, f"{name} (renamed into place) is handled")
    settle(watcher, rec)
    assert rec.count(folder / "tile.png") == 1
    assert rec.count(folder / "moved.png") == 1
    assert rec.count(folder / "sub" / "a.png") == 1
    assert rec.sizes(folder / "tile.png") == [3000]
    assert folder / "tile.png.part" not in rec.paths()


def test_junk_hidden_and_other_names_are_ignored(tmp_path, make_watcher):
    folder = tmp_path / "in"
    junk = ["notes.txt", ".x.png", "~x.png", "@eaDir/x.png", "@eaDir/x.png@SynoEAStream", "Thumbs.db",
            ".DS_Store", "sub/Thumbs.db", "sub/@eaDir/y.tif", ".hidden/z.png", "tile.png.part", "desktop.ini"]  # fmt: skip
    wanted = ["UPPER.PNG", "sub/ok.tif", "plain.png"]
    for name in junk[:6]:  # some before start (scan), the rest after (events)
        write(folder / name, 100)
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    for name in junk[6:]:
        write(folder / name, 100)
    for name in wanted:
        write(folder / name, 100)
    for name in wanted:
        wait_until(lambda n=name: rec.count(folder / n) == 1, f"{name} is handled")
    wait_idle(watcher)  # scan() is not meant to run beside the watcher's own loop
    watcher.scan()
    settle(watcher, rec)
    handled = {p.relative_to(folder).as_posix() for p in rec.paths() if "sentinel" not in p.name}
    assert handled == set(wanted)


def test_overwritten_file_is_handled_again(tmp_path, make_watcher):
    folder = tmp_path / "in"
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    tile = write(folder / "tile.png", 1000, seed=1)
    wait_until(lambda: rec.count(tile) == 1, "the first version is handled")
    write(tile, 2000, chunks=4, seed=2)  # in place: new size and mtime
    wait_until(lambda: rec.count(tile) == 2, "the overwritten version is handled")
    tmp = write(folder / ".tile.png.tmp", 3000, seed=3)
    os.replace(tmp, tile)  # atomically replaced
    wait_until(lambda: rec.count(tile) == 3, "the replaced version is handled")
    settle(watcher, rec)
    assert rec.sizes(tile) == [1000, 2000, 3000]


def test_incomplete_answer_waits_for_a_change(tmp_path, make_watcher):
    folder = tmp_path / "in"
    rec = Recorder(answer=lambda path, n: path.stat().st_size >= 2000 or "sentinel" in path.name)
    watcher = make_watcher(folder, rec)
    tile = write(folder / "tile.png", 1000)
    wait_until(lambda: rec.count(tile) == 1, "the incomplete version is offered")
    settle(watcher, rec)
    watcher.scan()
    assert tile not in watcher._pending, "an incomplete version was queued again without a change"
    settle(watcher, rec)
    assert rec.count(tile) == 1, "retried although the file did not change"
    write(tile, 2000, seed=5)
    wait_until(lambda: rec.count(tile) == 2, "the changed file is offered again")
    settle(watcher, rec)
    assert rec.sizes(tile) == [1000, 2000]


def test_handle_raising_is_retried_and_watcher_survives(tmp_path, make_watcher, caplog):
    folder = tmp_path / "in"

    def answer(path: Path, n: int) -> bool:
        if path.name == "flaky.png" and n <= 2:
            raise RuntimeError(f"journal busy ({n})")
        return True

    rec = Recorder(answer)
    watcher = make_watcher(folder, rec)
    flaky = write(folder / "flaky.png", 500)
    wait_until(lambda: rec.count(flaky) == 3, "flaky.png is retried after two failures")
    assert watcher._thread.is_alive()
    assert watcher.healthy()
    later = write(folder / "later.png", 500)
    wait_until(lambda: rec.count(later) == 1, "a later file is still handled")
    settle(watcher, rec)
    assert rec.count(flaky) == 3
    assert "journal busy" in caplog.text


# -- failures of the watching itself ---------------------------------------------------
def test_dead_observer_is_recreated_by_healthy(tmp_path, make_watcher):
    folder = tmp_path / "in"
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    settle(watcher, rec)
    dead = watcher._observer
    dead.stop()
    dead.join()
    missed = write(folder / "missed.png", 700)  # no observer: only the rescan of healthy() finds it
    assert watcher.healthy() is True
    assert watcher._observer is not dead and watcher._observer.is_alive()
    wait_until(lambda: rec.count(missed) == 1, "the file written while the observer was dead is found")
    # That rescan is over; with rescan_seconds at an hour only the new observer can report this one.
    fresh = write(folder / "fresh.png", 800)
    wait_until(lambda: rec.count(fresh) == 1, "a file written after the restart is handled")
    assert watcher.healthy() is True
    settle(watcher, rec)
    assert rec.count(missed) == 1 and rec.count(fresh) == 1


def test_periodic_rescan_finds_what_events_missed(tmp_path, make_watcher):
    folder = tmp_path / "in"
    rec = Recorder()
    watcher = make_watcher(folder, rec, rescan_seconds=1.0)
    settle(watcher, rec)
    watcher._observer.stop()  # no events any more, and no health check: only the rescan is left
    watcher._observer.join()
    tile = write(folder / "tile.png", 900)
    wait_until(lambda: rec.count(tile) == 1, "the periodic rescan finds tile.png")
    later = write(folder / "later.png", 900)
    wait_until(lambda: rec.count(later) == 1, "a later rescan finds later.png")
    wait_idle(watcher)
    assert rec.count(tile) == 1, "a rescan offered tile.png again although it did not change"


def watching_stopped(watcher: FolderWatcher) -> bool:
    """Whether the watcher's observer, or the emitter doing its watching, has stopped."""
    observer = watcher._observer
    return observer is None or not observer.is_alive() or not all(e.is_alive() for e in list(observer.emitters))


@pytest.mark.parametrize("how", ["rename", "rmtree"])
def test_folder_disappears_and_returns(tmp_path, make_watcher, polling, how):
    folder = tmp_path / "in"
    away = tmp_path / "in.away"
    rec = Recorder()
    watcher = make_watcher(folder, rec)
    first = write(folder / "first.png", 600)
    wait_until(lambda: rec.count(first) == 1, "first.png is handled")
    if how == "rename":
        os.rename(folder, away)
        write(away / "while-away.png", 300)
    else:
        shutil.rmtree(folder)
    if not (how == "rename" and not polling):  # an inotify watch follows a renamed folder; else watching stops
        wait_until(lambda: watching_stopped(watcher), "the observer notices that the folder is gone")
    # While it is away: health checks and scans must not crash.
    for _ in range(3):
        assert isinstance(watcher.healthy(), bool)
        watcher.scan()
    assert watcher._thread.is_alive()
    if how == "rename":
        os.rename(away, folder)
    else:
        folder.mkdir()
    back = write(folder / "back.png", 400)
    # The daemon checks health periodically: so does this wait.
    wait_until(lambda: rec.count(back) == 1, "a file written after the folder came back is handled",
               also=watcher.healthy)  # fmt: skip
    later = write(folder / "later.png", 450)
    wait_until(lambda: rec.count(later) == 1, "a second file after the return is handled", also=watcher.healthy)
    assert watcher.healthy() is True
    assert watcher._thread.is_alive()
    settle(watcher, rec)
    assert rec.count(first) == 1, "first.png came back unchanged and must not be handled again"
    assert rec.count(back) == 1 and rec.count(later) == 1


def test_start_creates_a_missing_folder(tmp_path, make_watcher):
    folder = tmp_path / "share" / "in"
    rec = Recorder()
    watcher = make_watcher(folder, rec, start=False)
    watcher.start()  # creates the folder
    assert folder.is_dir()
    tile = write(folder / "tile.png", 100)
    wait_until(lambda: rec.count(tile) == 1, "tile.png is handled")


# -- image_complete ------------------------------------------------------------------------
@pytest.mark.isbi
def test_image_complete_png(isbi, tmp_path):
    png = tmp_path / "00.png"
    shutil.copyfile(isbi / "train" / "image" / "00.png", png)
    assert image_complete(png) is True
    raw = png.read_bytes()
    half = tmp_path / "half.png"
    half.write_bytes(raw[: len(raw) // 2])
    assert image_complete(half) is False
    almost = tmp_path / "almost.png"
    almost.write_bytes(raw[: len(raw) - 100])  # the end of the image data is missing
    assert image_complete(almost) is False
    assert image_complete(tmp_path / "empty.png") is False  # missing file


@pytest.mark.isbi
@pytest.mark.parametrize("options", [{}, {"compression": "zlib"}, {"tile": (128, 128)}], ids=["plain", "zlib", "tiled"])
def test_image_complete_tiff(isbi, tmp_path, options):
    import tifffile
    from PIL import Image

    with Image.open(isbi / "train" / "image" / "00.png") as image:
        pixels = np.asarray(image)
    assert pixels.shape == (512, 512)
    tif = tmp_path / "00.tif"
    tifffile.imwrite(tif, pixels, **options)
    assert image_complete(tif) is True
    raw = tif.read_bytes()
    for keep in (len(raw) // 2, len(raw) - 100):
        cut = tmp_path / f"cut-{keep}.tif"
        cut.write_bytes(raw[:keep])
        assert image_complete(cut) is False, f"a TIFF cut to {keep} of {len(raw)} bytes counts as complete"


def _pages(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 256, 256), dtype=np.uint8)


@pytest.mark.parametrize("writer", ["tifffile", "tifffile-zlib", "pillow"])
def test_image_complete_multipage_tiff_cut_in_its_last_page(tmp_path, writer):
    """The first pages decode; a copy whose last page (data or directory) is cut off is incomplete."""
    import tifffile
    from PIL import Image

    pages = _pages(3)
    stack = tmp_path / "stack.tif"
    if writer == "pillow":  # Pillow writes each page's directory after its data
        images = [Image.fromarray(page) for page in pages]
        images[0].save(stack, save_all=True, append_images=images[1:])
    else:  # tifffile, page by page (not one contiguous block): each page's directory before its data
        with tifffile.TiffWriter(stack) as tif:
            for page in pages:
                tif.write(page, contiguous=False, compression="zlib" if writer.endswith("zlib") else None)
    assert image_complete(stack) is True
    raw = stack.read_bytes()
    with tifffile.TiffFile(stack) as tif:
        last = tif.pages[-1]
        last_starts = min(last.offset, *last.dataoffsets)
    for keep in (len(raw) - 20, len(raw) - 200, last_starts + 150, (last_starts + len(raw)) // 2):
        cut = tmp_path / f"cut-{keep}.tif"
        cut.write_bytes(raw[:keep])
        with tifffile.TiffFile(cut) as tif:  # what the old check looked at still decodes
            assert np.array_equal(tif.pages[0].asarray(), pages[0])
        assert image_complete(cut) is False, f"a {writer} stack cut to {keep} of {len(raw)} bytes counts as complete"


def test_image_complete_png_missing_only_its_last_bytes(tmp_path):
    """Pillow decodes a PNG whose IEND chunk is cut off; it still counts as incomplete."""
    from PIL import Image

    png = tmp_path / "tile.png"
    Image.fromarray(_pages(1)[0]).save(png)
    assert image_complete(png) is True
    raw = png.read_bytes()
    for missing in (1, 4, 8, 12):
        cut = tmp_path / f"cut-{missing}.png"
        cut.write_bytes(raw[:-missing])
        with Image.open(cut) as image:
            image.load()  # decodes without complaint
        assert image_complete(cut) is False, f"a PNG missing its last {missing} bytes counts as complete"


# -- VAST anchors --------------------------------------------------------------------------
def test_vast_anchors_refused_by_submit_are_offered_again(tmp_path, caplog):
    """Nodes count as seen only once their job is accepted; each refusal reason is logged once."""
    import logging
    import sqlite3

    from membraind.config import Settings
    from membraind.service.dispatcher import Dispatcher
    from membraind.service.journal import SqliteJournal
    from membraind.service.queues import JobQueues, open_hueys
    from membraind.service.settings import VastWatch
    from membraind.service.watchers.vast import VastWatcher
    from membraind.vast.emulator import VastEmulator
    from membraind.vast.layouts import SkeletonNode
    from membraind.vast.skeletons import AnnotationLayerData, SkeletonObject, save_skeleton_json
    from membraind.volumes.image_files import write_image

    for z, page in enumerate(_pages(3, seed=5)):
        write_image(tmp_path / "em" / f"{z:02d}.png", page)
    nodes = [SkeletonNode(index=i, x=x, y=y, z=z, parent=i - 1 if i else None)
             for i, (x, y, z) in enumerate([(10, 10, 0), (100, 40, 1), (200, 220, 2)])]  # fmt: skip
    skeletons = save_skeleton_json(
        tmp_path / "skeletons.json", [AnnotationLayerData(name="anchors", objects=[SkeletonObject(id=1, nodes=nodes)])]
    )
    home = tmp_path / "home"

    def dispatcher(roots: list[Path], journal_timeout: float = 30.0) -> Dispatcher:
        settings = Settings.model_validate({"service": {"home": str(home), "roots": [str(r) for r in roots]}})
        return Dispatcher(settings.service, settings.transfer, SqliteJournal(home / "journal.db", timeout=journal_timeout),
                          JobQueues(open_hueys(settings.service)))  # fmt: skip

    narrow, wide = dispatcher([]), dispatcher([tmp_path / "out"], journal_timeout=0.2)
    submit_to = [narrow]  # which real dispatcher the watcher submits to
    with VastEmulator(tmp_path / "em", skeletons=skeletons, port=0) as emulator:
        watch = VastWatch(port=emulator.port, anchor_layers=["anchors"], bundles=[home / "model"], out=tmp_path / "out")
        watcher = VastWatcher(watch, lambda job: submit_to[0].submit(job), submit_to[0].jobs_starting_with, home / "models")
        try:
            with caplog.at_level(logging.WARNING, logger="membraind.service.watchers.vast_anchors"):
                assert watcher.poll_once() == []  # out is outside narrow's roots: InputError
                assert watcher.poll_once() == []
                submit_to[0] = wide
                lock = sqlite3.connect(home / "journal.db", isolation_level=None)
                lock.execute("BEGIN IMMEDIATE")  # the journal is locked by another process's long write
                assert watcher.poll_once() == []
                assert watcher.poll_once() == []
                lock.execute("ROLLBACK")
                lock.close()
                [job] = watcher.poll_once()
            refusals = [r.getMessage() for r in caplog.records if "was refused" in r.getMessage()]
            assert len(refusals) == 2, refusals  # once per reason, not once per poll
            assert "outside the folders" in refusals[0] and "database is locked" in refusals[1]
            assert {(p.x, p.y, p.z) for p in job.spec.target.points} == {(10, 10, 0), (100, 40, 1), (200, 220, 2)}
            assert [r.id for r in wide.journal.list()] == [job.id]
            assert watcher.poll_once() == []  # accepted: not offered again
        finally:
            watcher.stop()
            narrow.journal.close()
            wide.journal.close()
