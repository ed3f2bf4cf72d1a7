"""Drawing items ahead in a background thread, so the network never waits for patches.

NumPy and SciPy release the GIL for most of a patch's work, so drawing overlaps with
training even in one process.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Prefetch(Generic[T]):
    """Calls ``draw`` ``count`` times in a background thread; :meth:`next` hands the results
    out in order. An exception in ``draw`` is re-raised by :meth:`next`."""

    def __init__(self, draw: Callable[[], T], count: int, ahead: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(draw, count), daemon=True)
        self._thread.start()

    def _fill(self, draw: Callable[[], T], count: int) -> None:
        for _ in range(count):
            if self._stop.is_set():
                return
            try:
                item = draw()
            except BaseException as exc:  # re-raised in the consuming thread
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def next(self) -> T:
        """The next item (waits for it)."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop drawing and wait for the thread to end."""
        self._stop.set()
        self._thread.join()
