"""The journal in Redis: shared by the scheduler (``membraind serve``) and every worker host.

Each transition is one Lua script, so it is atomic however many hosts race for a job
(two workers claiming the same job: exactly one gets it). Times come from the Redis
server's clock, so leases do not depend on the hosts' clocks agreeing. Layout, under
the prefix (default ``membraind:``)::

    job:<id>       hash: the job's fields (see base.COLUMNS), plus order, not_before,
                   lease_until, event_seq
    children:<id>  sorted set of the parts of a split job, by submission order
    all            sorted set of job ids by submission order
    state:<state>  sorted set of the job ids in each state, by submission order
    leases         sorted set of running job ids by lease expiry
    events         list of every state change (JSON), oldest first; events:<id> per job
    changes        stream of job ids whose record changed (the scheduler follows it
                   to publish progress of jobs that run on other hosts)

Redis must persist (appendonly yes): this is the record of truth. A single Redis
server (with replicas if wanted) is assumed; Redis Cluster is not supported.
"""

from __future__ import annotations

import json
import re
from typing import Iterable

import redis

from membraind_client.progress import Progress

from membraind.errors import ConfigError
from membraind.jobs.execute import JobResult
from membraind.service.job import Job, JobRecord
from membraind.service.journal.base import (
    COLUMNS, Journal, JournalEvent, expired_message, record_from_values, released_message, stored_progress,
)  # fmt: skip

__all__ = ["RedisJournal", "STATES", "redact"]

STATES = ("queued", "running", "done", "failed", "cancelled")
CHANGES_KEPT = 10000  # entries the changes stream keeps: ample for a follower blocking on it

_COMMON = """
local p = ARGV[1]
local id = ARGV[2]
local key = p .. 'job:' .. id
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local now_text = clock[1] .. '.' .. string.format('%06d', tonumber(clock[2]))
local function event(state, detail)
  local seq = redis.call('INCR', p .. 'eventseq')
  local job_seq = redis.call('HINCRBY', key, 'event_seq', 1)
  local entry = cjson.encode({seq, id, job_seq, state, now_text, detail})
  redis.call('RPUSH', p .. 'events', entry)
  redis.call('RPUSH', p .. 'events:' .. id, entry)
end
local function move(old, new)
  local order = redis.call('HGET', key, 'order')
  redis.call('ZREM', p .. 'state:' .. old, id)
  redis.call('ZADD', p .. 'state:' .. new, order, id)
  redis.call('HSET', key, 'state', new, 'updated', now_text)
end
local function changed()
  redis.call('XADD', p .. 'changes', 'MAXLEN', '~', ARGV[#ARGV], '*', 'id', id)
end
"""

# ARGV: prefix, id, fields (JSON object), keep
_ADD = """
if redis.call('EXISTS', key) == 1 then return 0 end
local order = redis.call('INCR', p .. 'order')
local fields = cjson.decode(ARGV[3])
for name, value in pairs(fields) do
  if value ~= cjson.null then redis.call('HSET', key, name, tostring(value)) end
end
redis.call('HSET', key, 'id', id, 'state', 'queued', 'progress', '0', 'message', 'waiting in the queue',
           'attempts', '0', 'cancel_requested', '0', 'not_before', '0', 'lease_until', '0',
           'created', now_text, 'updated', now_text, 'order', order)
redis.call('ZADD', p .. 'all', order, id)
redis.call('ZADD', p .. 'state:queued', order, id)
if fields['parent'] ~= nil and fields['parent'] ~= cjson.null then
  redis.call('ZADD', p .. 'children:' .. fields['parent'], order, id)
end
event('queued', '')
changed()
return 1
"""

# ARGV: prefix, id, worker, lease seconds, keep
_CLAIM = """
local s = redis.call('HMGET', key, 'state', 'cancel_requested')
if s[1] ~= 'queued' or s[2] ~= '0' then return 0 end
local lease = now + tonumber(ARGV[4])
move('queued', 'running')
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'started', now_text, 'progress', '0', 'message', 'started', 'worker', ARGV[3],
           'lease_until', tostring(lease))
redis.call('HDEL', key, 'progress_detail')
redis.call('ZADD', p .. 'leases', lease, id)
event('running', 'on ' .. ARGV[3])
changed()
return 1
"""

# ARGV: prefix, id, worker, lease seconds, keep
_RENEW = """
local s = redis.call('HMGET', key, 'state', 'worker')
if s[1] ~= 'running' or s[2] ~= ARGV[3] then return 0 end
local lease = now + tonumber(ARGV[4])
redis.call('HSET', key, 'lease_until', tostring(lease))
redis.call('ZADD', p .. 'leases', lease, id)
return 1
"""

# ARGV: prefix, id, fraction, message, progress JSON, keep
_PROGRESS = """
if redis.call('HGET', key, 'state') ~= 'running' then return 0 end
redis.call('HSET', key, 'progress', ARGV[3], 'message', ARGV[4], 'progress_detail', ARGV[5], 'updated', now_text)
changed()
return 1
"""

# ARGV: prefix, id, worker, state, result JSON or '', error or '', message, keep
_END = """
local s = redis.call('HMGET', key, 'state', 'worker')
if s[1] ~= 'running' or s[2] ~= ARGV[3] then return 0 end
move('running', ARGV[4])
redis.call('HSET', key, 'message', ARGV[7], 'finished', now_text, 'lease_until', '0')
redis.call('HDEL', key, 'progress_detail')
if ARGV[5] ~= '' then redis.call('HSET', key, 'result', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'error', ARGV[6]) end
if ARGV[4] == 'done' then redis.call('HSET', key, 'progress', '1') end
redis.call('ZREM', p .. 'leases', id)
if ARGV[6] ~= '' then event(ARGV[4], ARGV[6]) else event(ARGV[4], ARGV[7]) end
changed()
return 1
"""

# ARGV: prefix, id, worker, message, delay seconds, refund (0/1), keep
_REQUEUE = """
local s = redis.call('HMGET', key, 'state', 'worker')
if s[1] ~= 'running' or s[2] ~= ARGV[3] then return 0 end
move('running', 'queued')
redis.call('HSET', key, 'message', ARGV[4], 'not_before', tostring(now + tonumber(ARGV[5])), 'lease_until', '0')
redis.call('HDEL', key, 'progress_detail')
if ARGV[6] == '1' then redis.call('HINCRBY', key, 'attempts', -1) end
redis.call('ZREM', p .. 'leases', id)
event('queued', ARGV[4])
changed()
return 1
"""

# ARGV: prefix, id, keep
_REQUEST_CANCEL = """
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
if state == 'queued' then
  move('queued', 'cancelled')
  redis.call('HSET', key, 'message', 'cancelled before it started', 'cancel_requested', '1', 'finished', now_text)
  redis.call('HDEL', key, 'progress_detail')
  event('cancelled', 'cancelled before it started')
elseif state == 'running' then
  redis.call('HSET', key, 'cancel_requested', '1', 'message', 'cancelling', 'updated', now_text)
end
changed()
return 1
"""

# ARGV: prefix, id, worker that must hold it, message, only if its lease ran out (0/1), keep
_TAKE_BACK = """
local s = redis.call('HMGET', key, 'state', 'worker', 'lease_until', 'cancel_requested')
if s[1] ~= 'running' or s[2] ~= ARGV[3] then return false end
if ARGV[5] == '1' and tonumber(s[3]) >= now then return false end
local new = 'queued'
if s[4] == '1' then new = 'cancelled' end
move('running', new)
redis.call('HSET', key, 'message', ARGV[4], 'lease_until', '0')
redis.call('HDEL', key, 'progress_detail')
if new == 'cancelled' then redis.call('HSET', key, 'finished', now_text) end
redis.call('ZREM', p .. 'leases', id)
event(new, ARGV[4])
changed()
return new
"""

_FLOATS = ("progress", "created", "started", "finished", "updated")
_INTS = ("priority", "attempts")


class RedisJournal(Journal):
    """The job journal in the Redis server at ``url`` (``redis://[:password@]host:port/db``),
    under the key ``prefix``."""

    def __init__(self, url: str, prefix: str = "membraind:", *, timeout: float = 10.0) -> None:
        self.url, self.prefix = url, prefix
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30,
        )  # fmt: skip
        self._scripts = {
            name: self._redis.register_script(_COMMON + body)
            for name, body in {
                "add": _ADD, "claim": _CLAIM, "renew": _RENEW, "progress": _PROGRESS, "end": _END,
                "requeue": _REQUEUE, "request_cancel": _REQUEST_CANCEL, "take_back": _TAKE_BACK,
            }.items()
        }  # fmt: skip

    def close(self) -> None:
        self._redis.close()

    def _run(self, script: str, job_id: str, *args: object):
        values = [self.prefix, job_id, *("" if a is None else a for a in args), CHANGES_KEPT]
        return self._scripts[script](args=values)

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    # -- writing -----------------------------------------------------------------------
    def add(self, job: Job) -> tuple[JobRecord, bool]:
        fields = {"kind": job.spec.kind, "spec": job.spec.model_dump_json(), "priority": job.priority,
                  "source": job.source, "client": job.client, "parent": job.parent}  # fmt: skip
        created = bool(self._run("add", job.id, json.dumps(fields)))
        return self.get(job.id), created

    def claim(self, job_id: str, worker: str, lease_seconds: float) -> JobRecord | None:
        return self.get(job_id) if self._run("claim", job_id, worker, lease_seconds) else None

    def renew(self, job_id: str, worker: str, lease_seconds: float) -> bool:
        return bool(self._run("renew", job_id, worker, lease_seconds))

    def progress(self, job_id: str, progress: Progress) -> None:
        fraction, message, detail = stored_progress(progress)
        self._run("progress", job_id, repr(fraction), message, detail)

    def _end(self, job_id: str, worker: str, state: str, *, result: JobResult | None, error: str | None,
             message: str) -> bool:  # fmt: skip
        result_json = result.model_dump_json() if result else ""
        return bool(self._run("end", job_id, worker, state, result_json, error or "", message))

    def requeue(self, job_id: str, message: str, worker: str, *, delay: float = 0.0, refund_attempt: bool = False) -> bool:
        return bool(self._run("requeue", job_id, worker, message, delay, 1 if refund_attempt else 0))

    def request_cancel(self, job_id: str) -> JobRecord | None:
        return self.get(job_id) if self._run("request_cancel", job_id) else None

    def _take_back(self, only_expired: bool, pick) -> list[JobRecord]:
        """Send running jobs back to the queue (or to cancelled): those ``pick(worker, lease, now)`` picks."""
        ids = [i.decode() for i in self._redis.zrange(f"{self.prefix}leases", 0, -1)]
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._key(job_id), "worker", "lease_until")
            holders = pipe.execute()
        now = self._server_time()
        queued = []
        for job_id, (worker, lease) in zip(ids, holders):
            worker = worker.decode() if worker else ""
            if not pick(worker, float(lease or 0), now):
                continue
            message = expired_message(worker) if only_expired else released_message(worker)
            state = self._run("take_back", job_id, worker, message, 1 if only_expired else 0)
            if state in (b"queued", "queued"):
                queued.append(self.get(job_id))
        return queued

    def release(self, worker: str) -> list[JobRecord]:
        return self._take_back(False, lambda holder, lease, now: holder == worker)

    def expire_leases(self) -> list[JobRecord]:
        return self._take_back(True, lambda holder, lease, now: lease < now)

    # -- reading -----------------------------------------------------------------------
    def _server_time(self) -> float:
        seconds, micros = self._redis.time()
        return seconds + micros / 1e6

    @staticmethod
    def _record(raw: dict) -> JobRecord | None:
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        values: dict = {name: fields.get(name) for name in COLUMNS}
        for name in _FLOATS:
            values[name] = float(values[name]) if values[name] is not None else None
        for name in _INTS:
            values[name] = int(values[name])
        return record_from_values(values)

    def get(self, job_id: str) -> JobRecord | None:
        return self._record(self._redis.hgetall(self._key(job_id)))

    def _records(self, ids: list[str]) -> list[JobRecord]:
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(self._key(job_id))
            rows = pipe.execute()
        return [r for r in map(self._record, rows) if r is not None]

    def ids_starting_with(self, prefix: str, limit: int) -> list[str]:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"  # the prefix taken literally
        found = sorted(member.decode() for member, _ in self._redis.zscan_iter(f"{self.prefix}all", match=pattern))
        return found[:limit]

    def not_before(self, job_id: str) -> float:
        value = self._redis.hget(self._key(job_id), "not_before")
        return float(value) if value else 0.0

    def due(self, unchanged_since: float) -> list[JobRecord]:
        ids = [i.decode() for i in self._redis.zrange(f"{self.prefix}state:queued", 0, -1)]
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(self._key(job_id), "not_before", "updated")
            times = pipe.execute()
        now = self._server_time()
        return self._records([
            job_id for job_id, (not_before, updated) in zip(ids, times)
            if updated is not None and float(not_before or 0) <= now and float(updated) <= unchanged_since
        ])  # fmt: skip

    def list(self, states: Iterable[str] | None = None, limit: int | None = 50, oldest_first: bool = False) -> list[JobRecord]:
        keys = [f"{self.prefix}state:{s}" for s in states] if states else [f"{self.prefix}all"]
        end = -1 if limit is None else limit - 1
        with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrange(key, 0, end, desc=not oldest_first, withscores=True)
            found = [item for items in pipe.execute() for item in items]
        found.sort(key=lambda item: item[1], reverse=not oldest_first)
        ids = [job_id.decode() for job_id, _ in found[: None if limit is None else limit]]
        return self._records(ids)

    def children(self, parent: str) -> list[JobRecord]:
        return self._records([i.decode() for i in self._redis.zrange(f"{self.prefix}children:{parent}", 0, -1)])

    def counts(self) -> dict[str, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for state in STATES:
                pipe.zcard(f"{self.prefix}state:{state}")
            sizes = pipe.execute()
        return {state: size for state, size in zip(STATES, sizes) if size}

    def cancel_requested(self, job_id: str) -> bool:
        return self._redis.hget(self._key(job_id), "cancel_requested") == b"1"

    def events(self, job_id: str | None = None) -> list[JournalEvent]:
        key = f"{self.prefix}events" + (f":{job_id}" if job_id is not None else "")
        return [self._event(entry) for entry in self._redis.lrange(key, 0, -1)]

    @staticmethod
    def _event(entry: bytes) -> JournalEvent:
        seq, job_id, job_seq, state, when, detail = json.loads(entry)
        return (seq, job_id, job_seq, state, float(when), detail if isinstance(detail, str) else "")

    # -- following ---------------------------------------------------------------------
    def changes_position(self) -> str:
        """The changes stream's current end: pass it to :meth:`changes` to follow from now on."""
        last = self._redis.xrevrange(f"{self.prefix}changes", count=1)
        return last[0][0].decode() if last else "0-0"

    def changes(self, after: str, block_ms: int = 1000) -> tuple[list[str], str]:
        """The ids of jobs changed after stream position ``after`` (waits up to ``block_ms``
        for one), and the new position to pass next time."""
        reply = self._redis.xread({f"{self.prefix}changes": after}, block=block_ms, count=1000)
        if not reply:
            return [], after
        entries = reply[0][1]
        ids = list(dict.fromkeys(fields[b"id"].decode() for _, fields in entries))
        return ids, entries[-1][0].decode()

    def check(self) -> None:
        try:
            self._redis.ping()
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
            if isinstance(exc, redis.exceptions.AuthenticationError) or str(exc).startswith(("NOAUTH", "WRONGPASS")):
                raise ConfigError(f"the Redis server at {redact(self.url)} refused the connection ({exc}); check the "
                                  "password in [service.queue] redis_url") from None  # fmt: skip
            raise


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    return re.sub(r"//([^/@]*):[^/@]*@", r"//\1:***@", url)
