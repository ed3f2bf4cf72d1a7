"""Exactly one scheduler per cluster: ``membraind serve`` holds a Redis key while it runs.

The key names the holder (host and state folder) and expires unless renewed, so a
scheduler host that dies frees it within ``ttl`` seconds; the same serve restarted on
the same host takes it back at once (its instance lock proves the old one is gone).
"""

from __future__ import annotations

import logging
import socket

import redis

from membraind.errors import ConfigError

__all__ = ["SchedulerLock"]

log = logging.getLogger(__name__)

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class SchedulerLock:
    """The key ``<prefix>:scheduler`` in the Redis server at ``url``."""

    def __init__(self, url: str, prefix: str, state_dir: str, ttl: float = 30.0) -> None:
        from membraind.service.journal.redis import redact

        self.key, self.url = f"{prefix}:scheduler", redact(url)
        self.holder = f"{socket.gethostname()}:{state_dir}"
        self.ttl_ms = int(ttl * 1000)
        self._redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
        self._renew, self._release = self._redis.register_script(_RENEW), self._redis.register_script(_RELEASE)

    def acquire(self) -> None:
        """Take the key, or raise a ConfigError naming the scheduler that holds it."""
        try:
            if self._redis.set(self.key, self.holder, nx=True, px=self.ttl_ms) or self.renew():
                return
            holder = (self._redis.get(self.key) or b"?").decode(errors="replace")
        except redis.exceptions.ConnectionError as exc:
            raise ConfigError(f"cannot reach the Redis server at {self.url} ({exc}); check [service.queue] redis_url "
                              "and that redis-server runs") from None  # fmt: skip
        raise ConfigError(
            f"another membraind serve ({holder}) already schedules the cluster {self.key.rsplit(':', 1)[0]!r} on "
            f"{self.url}; a cluster has exactly one serve. Add GPU hosts with `membraind worker`, or give this "
            "serve its own [service.queue] prefix"
        )

    def renew(self) -> bool:
        """Extend the hold; False when it was lost (expired and taken by another serve)."""
        return bool(self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> None:
        """Let go of the key (only if still ours)."""
        try:
            self._release(keys=[self.key], args=[self.holder])
        except redis.exceptions.RedisError as exc:
            log.warning("could not release the scheduler key %s (%s); it expires by itself", self.key, exc)
        self._redis.close()
