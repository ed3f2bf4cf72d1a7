"""Workers: the engines and the queue consumers that run jobs.

:class:`JobWorker` is the part that runs jobs, embedded in ``membraind serve`` (the
single-host default) or in a :class:`WorkerService`: the ``membraind worker`` process
that a GPU host runs once per GPU (``membraind-worker@N.service``), taking jobs from the
queue the cluster shares. A worker only runs jobs; watching folders, the ZeroMQ API and
the queue's upkeep are the one ``serve``'s part.
"""

from __future__ import annotations

import logging
import os

from membraind.config import Settings
from membraind.service.engine.process import EngineProcess
from membraind.service.instance_lock import InstanceLock
from membraind.service.journal import Journal, journal_name, open_journal
from membraind.service.lifecycle import ServiceProcess
from membraind.service.queues import QUEUES, JobQueues, open_hueys
from membraind.service.runner import JobRunner, worker_name

__all__ = ["JobWorker", "WorkerService", "restrict_to_gpu"]

log = logging.getLogger(__name__)


def restrict_to_gpu(gpu: int | None) -> None:
    """Let this process and its engines see only GPU ``gpu`` (None: no GPU, CPU only).

    Set before any engine starts: the spawned engines inherit the environment, and there
    "cuda" then means this GPU.
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if gpu is None else str(gpu)


class JobWorker:
    """Engine processes and the runner consuming ``consume`` (queue names) as ``name``.

    It takes the whole ``settings``: its engines run jobs of every kind, each with the
    sections it uses (:func:`~membraind.jobs.execute.run_job`); the runner gets ``[service]``.
    """

    def __init__(self, settings: Settings, journal: Journal, queues: JobQueues, name: str, notify,
                 consume: tuple[str, ...] = QUEUES) -> None:  # fmt: skip
        service = settings.service
        settings_json = settings.model_dump_json()
        options = {"hang_seconds": service.hang_seconds, "cancel_grace": service.cancel_grace_seconds}
        self.name, self.queues, self.consume = name, queues, consume
        self.engines = {queue: EngineProcess(queue, settings_json, runs_models=queue == "gpu", **options) for queue in consume}
        self.runner = JobRunner(service, journal, self.engines, name, queues.enqueue_job, notify)
        queues.executor = self.runner.execute

    def start_engine(self, should_stop) -> None:
        """Start the GPU engine now: the first tile from the scope should not wait for imports."""
        if "gpu" in self.engines:
            self.engines["gpu"].start(should_stop)

    @property
    def models_device(self) -> str | None:
        """Where the GPU engine runs models (``cpu (no CUDA device)`` on a machine without one), once started."""
        return self.engines["gpu"].device if "gpu" in self.engines else None

    def start(self) -> None:
        """Start consuming."""
        self.queues.start(self.consume)

    def healthy(self) -> bool:
        """Whether every consumer thread is alive (dead ones are restarted)."""
        return self.queues.healthy()

    def stop(self) -> None:
        """The running job reaches a safe point and goes back to the queue; engines exit."""
        self.runner.stopping.set()
        self.queues.stop()
        for engine in self.engines.values():
            engine.stop()


class WorkerService(ServiceProcess):
    """``membraind worker``: runs jobs from the shared queue on one GPU (or the CPU)."""

    def __init__(self, settings: Settings, role: str, consume: tuple[str, ...] = QUEUES) -> None:
        super().__init__()
        self.settings, self.service = settings, settings.service
        self.name, self.consume = worker_name(role), consume
        self.lock = InstanceLock(self.service.state_path(), f"worker-{role}", f"worker {role}",
                                 "give this worker another --name")  # fmt: skip
        self.health_interval = min(self.health_interval, self.service.queue.lease_seconds / 3)
        self.journal: Journal | None = None
        self.worker: JobWorker | None = None

    def start(self) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("huey").setLevel(logging.WARNING)
        self.lock.acquire()
        self.notifier.extend_timeout(300)
        self.journal = open_journal(self.service)
        self.wait_for_journal(self.journal, journal_name(self.service))
        self.notifier.status("starting: loading the engine")
        queues = JobQueues(open_hueys(self.service), self.service.queue_poll_seconds)
        self.worker = JobWorker(self.settings, self.journal, queues, self.name, lambda record: None, self.consume)
        # Jobs this worker held when it was last killed: back to the queue now, not after the lease.
        for record in self.journal.release(self.name):
            queues.enqueue_job(record)
            log.info("job %s: interrupted when this worker stopped; queued again", record.id)
        self.worker.start_engine(self._stop.is_set)
        self.worker.start()
        status = f"ready: worker {self.name} takes {' and '.join(self.consume)} jobs from the {self.service.queue.backend} queue"
        if self.worker.models_device:
            status += f"; models run on {self.worker.models_device}"
        log.info(status)
        self.notifier.ready(status)

    def healthy(self) -> bool:
        consuming = self.worker.healthy()  # first: it restarts dead consumers whatever the journal says
        return self.journal_readable(self.journal) and consuming

    def stop(self) -> None:
        self.notifier.stopping()
        if self.worker is not None:
            log.info("stopping: the running job is brought to a safe point and re-queued")
            self.worker.stop()
            log.info("stopped")
        if self.journal is not None:  # also when the start ended early (waiting for Redis, say)
            self.journal.close()
        self.lock.release()
