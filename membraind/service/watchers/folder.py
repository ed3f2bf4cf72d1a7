"""Watching a folder for finished files: watchdog events as hints, scans as the truth.

Events only make pickup fast. Files present at start-up, files an event missed (inotify
overflow, a dead observer, a network share) and files renamed into place are all found
by the scan at start and the periodic rescan. A file is handed on when it is complete:
at once after a ``closed`` or ``moved`` event (the writer is done), else once its size
and mtime have held for ``stable_seconds``. The handler may still say "not yet" (a
truncated image): the file is looked at again when it changes.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

__all__ = ["FolderWatcher", "IGNORED_NAMES", "TryLater"]

log = logging.getLogger(__name__)

# Junk that file servers and desktops leave in shared folders.
IGNORED_NAMES = ("@eaDir", ".DS_Store", "Thumbs.db", ".Trashes", "desktop.ini")
Stat = tuple[int, int]  # size, mtime_ns


class TryLater(Exception):
    """Raised by a handler that cannot deal with a file now for a reason outside it (a
    folder it cannot write, say): the message is logged and the next rescan offers the
    file again, rather than every half second."""


def _stat(path: Path) -> Stat | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if os.path.isfile(path) else None


class _Events(FileSystemEventHandler):
    """Pushes (path, complete) onto a queue: tiny, and never raises (that would kill the observer)."""

    def __init__(self, inbox: "queue.Queue[tuple[Path, bool]]") -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            if event.is_directory or event.event_type in ("opened", "closed_no_write", "deleted"):
                return
            if event.event_type == "moved":
                self.inbox.put((Path(os.fsdecode(event.dest_path)), True))
            else:
                self.inbox.put((Path(os.fsdecode(event.src_path)), event.event_type == "closed"))
        except Exception:  # pragma: no cover - defensive
            log.exception("file event handler failed")


class FolderWatcher:
    """Watches ``folder`` and calls ``handle(path)`` once per complete matching file (per version).

    ``handle`` returns True when the file is dealt with, False when it is not complete
    yet (it is retried when the file changes), or raises :class:`TryLater`.
    ``matches(path)`` filters names.
    """

    def __init__(
        self,
        name: str,
        folder: Path,
        handle: Callable[[Path], bool],
        patterns: list[str],
        *,
        recursive: bool = True,
        polling: bool = False,
        poll_seconds: float = 2.0,
        stable_seconds: float = 1.0,
        rescan_seconds: float = 120.0,
    ) -> None:
        self.name, self.folder, self.handle = name, Path(folder), handle
        self.patterns = [p.lower() for p in patterns]
        self.recursive, self.polling, self.poll_seconds = recursive, polling, poll_seconds
        self.stable_seconds, self.rescan_seconds = stable_seconds, rescan_seconds
        self._inbox: queue.Queue[tuple[Path, bool]] = queue.Queue()
        self._pending: dict[Path, tuple[Stat, float]] = {}  # path -> (stat, time it was last seen changing)
        self._seen: dict[Path, Stat] = {}  # the version of each file already dealt with (or found incomplete)
        self._observer = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._rescan_now = threading.Event()
        self.last_loop = time.monotonic()
        self._outage_reported = False

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Scan the folder, then watch it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._start_observer()
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._inbox.put((self.folder, False))  # wake the loop
        if self._thread is not None:
            self._thread.join(10)
        self._stop_observer()

    def _start_observer(self) -> None:
        if not self.folder.is_dir():
            return  # a share that is away: the health check starts it when the folder is back
        kind = PollingObserver if self.polling else Observer
        observer = kind(timeout=self.poll_seconds) if self.polling else kind()
        observer.schedule(_Events(self._inbox), str(self.folder), recursive=self.recursive)
        try:
            observer.start()
        except OSError as exc:
            if exc.errno != errno.ENOSPC or self.polling:
                raise
            log.error("%s: inotify watch limit reached (raise fs.inotify.max_user_watches); polling %s instead",
                      self.name, self.folder)  # fmt: skip
            self.polling = True
            return self._start_observer()
        self._observer = observer

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None

    def healthy(self) -> bool:
        """Whether watching works; a dead observer is re-created (with a rescan) and reported once."""
        thread_ok = self._thread is not None and self._thread.is_alive()
        observer = self._observer
        # An observer outlives its emitter: the emitter stops when the folder goes away.
        if observer is not None and observer.is_alive() and all(e.is_alive() for e in list(observer.emitters)):
            self._outage_reported = False
            return thread_ok
        if not self._outage_reported:  # once per outage, not on every health check
            log.warning("%s: the file watcher of %s stopped; starting it again and rescanning", self.name, self.folder)
            self._outage_reported = True
        self._stop_observer()
        try:
            self._start_observer()
        except OSError as exc:
            log.error("%s: cannot watch %s: %s", self.name, self.folder, exc)
            return False
        self._rescan_now.set()
        self._inbox.put((self.folder, False))
        return thread_ok and (self._observer is not None or not self.folder.exists())

    # -- the loop -------------------------------------------------------------------------
    def matches(self, path: Path) -> bool:
        """Whether ``path`` is a file this watcher cares about."""
        name = path.name
        if name.startswith((".", "~")) or any(part in IGNORED_NAMES for part in path.parts):
            return False
        if path.is_relative_to(self.folder) and any(p.startswith(".") for p in path.relative_to(self.folder).parts):
            return False  # in a hidden folder, which the scan does not enter either
        return any(fnmatch.fnmatchcase(name.lower(), p) for p in self.patterns)

    def _run(self) -> None:
        next_scan = 0.0  # scan at once: files that arrived while the daemon was down
        while not self._stop.is_set():
            self.last_loop = time.monotonic()
            try:
                if self._rescan_now.is_set() or time.monotonic() >= next_scan:
                    self._rescan_now.clear()
                    self.scan()
                    next_scan = time.monotonic() + self.rescan_seconds
                timeout = min(0.05 if self._pending else 1.0, max(0.0, next_scan - time.monotonic()))
                try:
                    path, complete = self._inbox.get(timeout=timeout)
                    self._event(path, complete)
                    while True:  # drain a burst before looking at stability
                        path, complete = self._inbox.get_nowait()
                        self._event(path, complete)
                except queue.Empty:
                    pass
                self._check_pending()
            except Exception:  # keep watching whatever one file did
                log.exception("%s: error while watching %s", self.name, self.folder)
                self._stop.wait(1.0)

    def _event(self, path: Path, complete: bool) -> None:
        if path == self.folder or not self.matches(path) or (not self.recursive and path.parent != self.folder):
            return
        stat = _stat(path)
        if stat is None or self._seen.get(path) == stat:
            return  # gone, or this version was dealt with already (duplicate events)
        if complete:
            self._offer(path, stat)
        else:
            self._pending[path] = (stat, time.monotonic())

    def _offer(self, path: Path, stat: Stat) -> None:
        self._pending.pop(path, None)
        try:
            handled = self.handle(path)
        except TryLater as exc:
            log.warning("%s: %s; trying again at the next rescan (within %.0f s)", self.name, exc, self.rescan_seconds)
            return  # not marked seen: the rescan offers it again
        except Exception:  # e.g. the journal was busy: nothing is dropped, try again shortly
            log.exception("%s: could not take %s; will try again", self.name, path)
            self._pending[path] = (stat, time.monotonic())
            return
        self._seen[path] = stat  # incomplete ones too: looked at again only when they change
        if not handled:
            log.info("%s: %s is not complete yet; waiting for it to change", self.name, path)

    def _check_pending(self) -> None:
        now = time.monotonic()
        for path, (stat, since) in list(self._pending.items()):
            current = _stat(path)
            if current is None:
                self._pending.pop(path)
            elif current != stat:
                self._pending[path] = (current, now)
            elif now - since >= self.stable_seconds:
                self._offer(path, current)

    def scan(self) -> None:
        """Walk the folder: every matching file not yet dealt with in its current version becomes pending."""
        if not self.folder.is_dir():
            log.warning("%s: %s is not reachable; will look again", self.name, self.folder)
            return
        walker = os.walk(self.folder) if self.recursive else [(str(self.folder), [], os.listdir(self.folder))]
        present = set()
        for top, dirs, files in walker:
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in IGNORED_NAMES]
            for name in files:
                path = Path(top) / name
                if not self.matches(path):
                    continue
                present.add(path)
                stat = _stat(path)
                if stat is not None and self._seen.get(path) != stat and path not in self._pending:
                    # Unchanged for long already (arrived while the daemon was down): no need to wait.
                    quiet = time.time() - stat[1] / 1e9 >= self.stable_seconds
                    self._pending[path] = (stat, time.monotonic() - (self.stable_seconds if quiet else 0.0))
        for path in [p for p in self._seen if p not in present]:
            del self._seen[path]  # forget removed files (not a mass deletion: nothing is undone)
