"""The composition root of ``membraind serve``: starts, watches over and stops everything.

Start-up order: take the instance lock, open the journal, start the GPU engine process,
rebuild the queues from the journal, start the queue consumers and the watchers, then
tell systemd READY. While running, the main thread checks health and pings the systemd
watchdog only while every part is healthy. SIGTERM or SIGINT stops gracefully: the
running job reaches a safe point (a prediction finishes its tile, training keeps its
checkpoint) and goes back to the queue with everything still queued; the next start
picks them all up.
"""

from __future__ import annotations

import logging
import signal
import threading

from membraind_client.messages import ModelInfo

from membraind.config import Settings
from membraind.errors import ConfigError, InputError
from membraind.service.dispatcher import Dispatcher
from membraind.service.api import ApiHandler
from membraind.service.engine import EngineProcess, JobCancelled
from membraind.service.events import EventFeed
from membraind.service.instance_lock import InstanceLock
from membraind.service.jobs import Job, JobRecord
from membraind.service.journal import Journal
from membraind.service.models import find_models
from membraind.service.paths import check_paths
from membraind.service.systemd import Notifier
from membraind.service.watchers.requests import RequestFolder
from membraind.service.watchers.scope import ScopeWatcher
from membraind.service.watchers.vast_anchors import VastAnchorWatcher
from membraind.service.zmq_server import ApiServer

__all__ = ["Daemon", "JOURNAL_FILE", "QUEUE_FILE"]

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.db"
QUEUE_FILE = "queue.db"
HEALTH_INTERVAL = 5.0


class Daemon:
    """membraind as a service, built from ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.service = settings, settings.service
        self.state = self.service.state_path()
        self.notifier = Notifier()
        self.lock = InstanceLock(self.state)
        self._stop = threading.Event()
        self.dispatcher: Dispatcher | None = None
        self.requests: RequestFolder | None = None
        self.watchers: list = []
        self.api: ApiServer | None = None
        self.started = False

    # -- the one way in -------------------------------------------------------------------
    def submit(self, job: Job) -> tuple[JobRecord, bool]:
        """Record and queue a job (see :meth:`Dispatcher.submit`)."""
        return self.dispatcher.submit(job)

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Bring everything up; READY is sent at the end."""
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("huey").setLevel(logging.WARNING)  # its start-up banner is noise in the journal
        roots = self.service.allowed_roots()
        for index, watch in enumerate([*self.service.scope, *self.service.vast]):
            try:  # a watch that can only produce refused jobs is a configuration error
                check_paths(watch, roots)
            except InputError as exc:
                section = "scope" if index < len(self.service.scope) else "vast"
                raise ConfigError(f"[[service.{section}]] {exc}") from None
        self.lock.acquire()
        self.notifier.status("starting: loading the engine")
        self.notifier.extend_timeout(300)
        journal = Journal(self.state / JOURNAL_FILE)
        settings_json = self.settings.model_dump_json()
        options = {"hang_seconds": self.service.hang_seconds, "cancel_grace": self.service.cancel_grace_seconds}
        engines = {"gpu": EngineProcess("gpu", settings_json, **options), "cpu": EngineProcess("cpu", settings_json, **options)}
        self.dispatcher = Dispatcher(self.settings, journal, self.state / QUEUE_FILE, engines)
        engines["gpu"].start(self._stop.is_set)  # eagerly: the first tile from the scope should not wait for imports
        requeued = self.dispatcher.recover()
        if self.service.api.enabled:
            self.api = self._api_server(journal)
            self.api.start()  # a port in use stops the start here, with the reason

        self.requests = RequestFolder(
            self.service.requests_path(), self.submit, polling=self.service.request_polling,
            rescan_seconds=self.service.rescan_seconds,
        )  # fmt: skip
        self.dispatcher.add_listener(self.requests.on_job)
        self.watchers = [self.requests.folder]
        self.watchers += [ScopeWatcher(w, self.submit, self.service.rescan_seconds).folder for w in self.service.scope]
        self.watchers += [VastAnchorWatcher(w, self.submit) for w in self.service.vast]

        self.dispatcher.queues.start()
        for watcher in self.watchers:
            watcher.start()
        self.started = True
        status = f"ready: {requeued} job(s) re-queued, watching {self.service.requests_path()}"
        if self.service.scope:
            status += f" and {len(self.service.scope)} scope folder(s)"
        if self.api is not None:
            status += f"; API on {self.service.api.endpoint}"
        log.info(status)
        self.notifier.ready(status)

    def _api_server(self, journal: Journal) -> ApiServer:
        feed = EventFeed()
        self.dispatcher.add_listener(feed.on_job)
        handler = ApiHandler(journal, self.submit, self.dispatcher.cancel, self.models, feed, self.service.api.max_message_bytes)
        return ApiServer(self.service.api, handler, feed)

    def models(self) -> list[ModelInfo]:
        """The model bundles in the models folder and those the watchers use."""
        watched = [bundle for watch in [*self.service.scope, *self.service.vast] for bundle in watch.bundles]
        return find_models(self.service.models_path(), watched)

    def healthy(self) -> bool:
        """Whether every part works: queue workers, watchers, the API, the journal (dead parts are restarted)."""
        ok = self.dispatcher.queues.healthy()
        if self.api is not None:
            ok = self.api.healthy() and ok
        for watcher in self.watchers:
            ok = watcher.healthy() and ok
        try:
            self.dispatcher.journal.counts()
        except Exception as exc:
            log.error("the journal cannot be read: %s", exc)
            ok = False
        return ok

    def request_stop(self, *_: object) -> None:
        """Ask the daemon to stop (signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop. Must be called from the main thread."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no reload; a stray HUP must not kill the service
        try:
            self.start()
            interval = HEALTH_INTERVAL
            if self.notifier.watchdog_seconds:
                interval = min(interval, self.notifier.watchdog_seconds / 2)
            while not self._stop.wait(interval):
                if self.healthy():
                    self.notifier.watchdog()
                else:
                    log.warning("a part of the daemon is unhealthy; not pinging the systemd watchdog")
                self.dispatcher.reconcile_periodically()  # jobs whose enqueue failed (journal -> queue)
        except JobCancelled:  # SIGTERM while the engine was still starting: a normal stop
            log.info("stop requested during start-up")
        finally:
            self.stop()

    def stop(self) -> None:
        """Graceful stop: the running job reaches a safe point and is re-queued."""
        self.notifier.stopping()
        if self.dispatcher is not None:
            log.info("stopping: the running job is brought to a safe point and re-queued")
            self.dispatcher.stopping.set()
            if self.api is not None:
                self.api.stop()
            for watcher in self.watchers:
                watcher.stop()
            self.dispatcher.queues.stop()
            for engine in self.dispatcher.engines.values():
                engine.stop()
            self.dispatcher.journal.close()
            log.info("stopped")
        self.lock.release()
