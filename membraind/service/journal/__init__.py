"""The job journal, on the backend the configuration names.

docs/design-notes.md, "The journal is the record of truth".

See :mod:`membraind.service.journal.base` for the state machine every backend keeps.
"""

from __future__ import annotations

from membraind.service.journal.base import Journal
from membraind.service.journal.sqlite import SqliteJournal
from membraind.service.settings import ServiceSettings

__all__ = ["Journal", "SqliteJournal", "open_journal", "journal_name", "JOURNAL_FILE"]

JOURNAL_FILE = "journal.db"


def journal_name(service: ServiceSettings) -> str:
    """Where the configured journal lives, for messages: "the Redis server at URL" or the file."""
    if service.queue.backend == "redis":
        from membraind.service.journal.redis import redact

        return f"the Redis server at {redact(service.queue.redis_url)}"
    return f"the journal {service.state_path() / JOURNAL_FILE}"


def open_journal(service: ServiceSettings) -> Journal:
    """The journal ``[service.queue]`` names: the state folder's SQLite file, or the Redis server."""
    if service.queue.backend == "redis":
        from membraind.service.journal.redis import RedisJournal

        return RedisJournal(service.queue.redis_url, f"{service.queue.prefix}:")
    return SqliteJournal(service.state_path() / JOURNAL_FILE)
