"""The composition root of ``membraind serve``: starts, watches over and stops everything.

Start-up order: take the instance lock, open the journal (waiting for a Redis server
that is not up yet), take the cluster's scheduler key (Redis), start the GPU engine
process (when serve runs jobs itself), rebuild the queues from the journal, start the
queue consumers, the watchers and the API, then tell systemd READY. While running, the main thread checks health, pings the systemd
watchdog only while every part is healthy, takes over jobs from workers whose lease
expired and reconciles the queue with the journal. SIGTERM or SIGINT stops gracefully:
the running job reaches a safe point (a prediction finishes its tile, training keeps its
checkpoint) and goes back to the queue with everything still queued.
"""

from __future__ import annotations

import logging

from membraind_client.messages import ModelInfo

from membraind.config import Settings
from membraind.errors import ConfigError, InputError
from membraind.service.api import ApiHandler
from membraind.service.dispatcher import Dispatcher
from membraind.service.events import EventFeed
from membraind.service.follower import ChangeFollower
from membraind.service.instance_lock import InstanceLock
from membraind.service.job import Job, JobRecord
from membraind.service.journal import JOURNAL_FILE, Journal, journal_name, open_journal
from membraind.service.lifecycle import ServiceProcess
from membraind.service.model_catalog import find_models
from membraind.service.paths import check_paths
from membraind.service.queues import QUEUE_FILE, JobQueues, open_hueys
from membraind.service.runner import worker_name
from membraind.service.watchers.requests import RequestFolder
from membraind.service.watchers.scope import ScopeWatcher
from membraind.service.watchers.vast import VastWatcher
from membraind.service.worker import JobWorker
from membraind.service.zmq_server import ApiServer

__all__ = ["Daemon", "JOURNAL_FILE", "QUEUE_FILE"]

log = logging.getLogger(__name__)


class Daemon(ServiceProcess):
    """membraind as a service, built from ``settings``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings, self.service = settings, settings.service
        self.state = self.service.state_path()
        self.lock = InstanceLock(self.state)
        self.scheduler_lock = None
        self.clustered = self.service.queue.backend == "redis"
        self.health_interval = min(self.health_interval, self.service.queue.lease_seconds / 3)
        self.dispatcher: Dispatcher | None = None
        self.worker: JobWorker | None = None
        self.follower: ChangeFollower | None = None
        self.requests: RequestFolder | None = None
        self.watchers: list = []
        self.api: ApiServer | None = None
        self.console = None  # the lab console's web server ([service.web])
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
        self.notifier.extend_timeout(300)
        journal = open_journal(self.service)
        self.wait_for_journal(journal, journal_name(self.service))
        if self.clustered:
            from membraind.service.scheduler_lock import SchedulerLock

            queue = self.service.queue
            self.scheduler_lock = SchedulerLock(queue.redis_url, queue.prefix, str(self.state))
            self.scheduler_lock.acquire()
        self.notifier.status("starting: loading the engine")
        queues = JobQueues(open_hueys(self.service), self.service.queue_poll_seconds)
        # Other processes run jobs (workers on Redis, or local ones on SQLite): serve learns of
        # every change, its own included, from the journal's change log.
        follow = self.clustered or not self.service.queue.runs_jobs_in_serve()
        self.dispatcher = Dispatcher(self.service, self.settings.transfer, journal, queues, direct_notifications=not follow)
        if self.service.queue.runs_jobs_in_serve():
            self.worker = JobWorker(self.settings, journal, queues, worker_name("serve"), self.dispatcher.announce)
            self.worker.start_engine(self._stop.is_set)
        requeued = self.dispatcher.recover(worker_name("serve"))
        if follow:
            self.follower = ChangeFollower(journal, self.dispatcher.notify)
        feed = EventFeed()  # job events for the ZeroMQ PUB socket and the console's pages
        self.dispatcher.add_listener(feed.on_job)
        if self.service.api.enabled:
            self.api = self._api_server(journal, feed)
            self.api.start()  # a port in use stops the start here, with the reason
        if self.service.web.enabled:
            self.console = self._console(journal, feed)
            self.console.start()

        self.requests = RequestFolder(
            self.service.requests_path(), self.submit, journal.get, polling=self.service.request_polling,
            rescan_seconds=self.service.rescan_seconds,
        )  # fmt: skip
        self.dispatcher.add_listener(self.requests.on_job)
        self.requests.recover()  # before jobs run: its status files are then written afresh
        self.watchers = [self.requests.folder]
        self.watchers += [ScopeWatcher(w, self.submit, self.service.rescan_seconds).folder for w in self.service.scope]
        models = self.service.models_path()
        self.watchers += [VastWatcher(w, self.submit, self.dispatcher.jobs_starting_with, models) for w in self.service.vast]

        if self.follower is not None:
            self.follower.start()
        if self.worker is not None:
            self.worker.start()
        for watcher in self.watchers:
            watcher.start()
        self.started = True
        status = f"ready: {requeued} job(s) re-queued, watching {self.service.requests_path()}"
        if self.service.scope:
            status += f" and {len(self.service.scope)} scope folder(s)"
        if self.api is not None:
            status += f"; API on {self.service.api.endpoint}"
        if self.console is not None:
            status += f"; console at {self.console.url}"
        if self.worker is None:
            status += f"; jobs run on `membraind worker` processes ({self.service.queue.backend} queue)"
        elif self.worker.models_device:
            status += f"; models run on {self.worker.models_device}"
        log.info(status)
        self.notifier.ready(status)

    def _api_server(self, journal: Journal, feed: EventFeed) -> ApiServer:
        handler = ApiHandler(journal, self.submit, self.dispatcher.cancel, self.models, feed, self.service.api.max_message_bytes)
        return ApiServer(self.service.api, handler, feed)

    def _console(self, journal: Journal, feed: EventFeed):
        from membraind.console.server import console_server  # the web stack is loaded only when served

        device = lambda: self.worker.models_device if self.worker is not None else None  # noqa: E731
        return console_server(self.settings, journal, self.submit, self.dispatcher.cancel, feed, device)

    def models(self) -> list[ModelInfo]:
        """The model bundles in the models folder and those the watchers use."""
        watched = [bundle for watch in [*self.service.scope, *self.service.vast] for bundle in watch.bundles]
        return find_models(self.service.models_path(), watched)

    def healthy(self) -> bool:
        """Whether every part works: queue workers, watchers, the API, the journal (dead parts are restarted)."""
        ok = self.worker.healthy() if self.worker is not None else True
        if self.api is not None:
            ok = self.api.healthy() and ok
        if self.console is not None:
            ok = self.console.healthy() and ok
        if self.follower is not None:
            ok = self.follower.healthy() and ok
        for watcher in self.watchers:
            ok = watcher.healthy() and ok
        ok = self.journal_readable(self.dispatcher.journal) and ok
        if self.scheduler_lock is not None:
            try:
                if not self.scheduler_lock.renew():
                    log.error("this serve lost the cluster's scheduler key (Redis was unreachable for too long?); "
                              "taking it back")  # fmt: skip
                    self.scheduler_lock.acquire()
            except Exception as exc:
                log.error("cannot renew the cluster's scheduler key: %s", exc)
                ok = False
        return ok

    def periodically(self) -> None:
        """Jobs of dead workers back to the queue; the queue reconciled with the journal;
        request files that found the journal away queued now."""
        self.dispatcher.periodically()
        if self.requests.waiting:
            try:
                self.requests.submit_waiting()
            except Exception as exc:  # e.g. the request folder's share is away: the next turn tries again
                log.warning("cannot queue the waiting request files (%s: %s); trying again at the next turn",
                            type(exc).__name__, exc)  # fmt: skip

    def stop(self) -> None:
        """Graceful stop: the running job reaches a safe point and is re-queued."""
        self.notifier.stopping()
        if self.dispatcher is not None:
            log.info("stopping: the running job is brought to a safe point and re-queued")
            if self.worker is not None:
                self.worker.runner.stopping.set()
            if self.api is not None:
                self.api.stop()
            if self.console is not None:
                self.console.stop()
            for watcher in self.watchers:
                watcher.stop()
            if self.worker is not None:
                self.worker.stop()
            if self.follower is not None:
                self.follower.stop()
            self.dispatcher.journal.close()
            log.info("stopped")
        if self.scheduler_lock is not None:
            self.scheduler_lock.release()
        self.lock.release()
