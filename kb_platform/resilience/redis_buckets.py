"""Token buckets that every replica of a service shares, in Redis.

One Lua script (run by its SHA, ``EVALSHA``; loaded again if Redis lost it) takes a token from
each of a request's buckets (its key's, its client address's) atomically: all of them, or none
when any is empty, so a refused request costs no bucket anything. Time is Redis's own (``TIME``),
so the replicas' clocks do not matter; a bucket left alone long enough to fill up again expires
(it would read as full anyway), so idle keys and addresses cost no memory.

Needs Redis 5 or newer (scripts that read ``TIME`` and then write). The buckets of one request
are several keys: on a Redis Cluster they would need one hash slot; use a single Redis (with a
replica and Sentinel for availability), which is what holds a few bytes per active client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# KEYS: the buckets; ARGV: rate and capacity of each, in the same order.
# Returns {allowed (1/0), the refusing bucket's index (1-based, 0 when allowed),
#          seconds until it has a token ("-1": never), tokens left in the fullest-drained bucket}.
TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local tokens = {}
local stamps = {}
local refused, wait = 0, 0
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', key, 't', 'at')
  local t, at = tonumber(state[1]), tonumber(state[2])
  if t == nil or at == nil then
    t, at = capacity, now
  end
  if now > at then
    t = math.min(capacity, t + (now - at) * rate)
    at = now
  end
  tokens[i], stamps[i] = t, at
  if t < 1 then
    local needed = -1
    if rate > 0 then needed = (1 - t) / rate end
    if refused == 0 or needed < 0 or (wait >= 0 and needed > wait) then
      refused, wait = i, needed
    end
  end
end
if refused > 0 then
  return {0, refused, tostring(wait), '0'}
end
local left = nil
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local capacity = tonumber(ARGV[2 * i])
  local t = tokens[i] - 1
  redis.call('HSET', key, 't', tostring(t), 'at', tostring(stamps[i]))
  local ttl_ms = 86400000
  if rate > 0 then ttl_ms = math.ceil((capacity - t) / rate * 1000) + 1000 end
  redis.call('PEXPIRE', key, ttl_ms)
  if left == nil or t < left then left = t end
end
return {1, 0, '0', tostring(left)}
"""


class SharedStoreUnavailable(Exception):
    """Redis could not take the tokens: unreachable, timed out, refusing (auth, memory)."""


@dataclass(frozen=True)
class Bucket:
    key: str
    rate_per_s: float
    capacity: int


@dataclass(frozen=True)
class Taken:
    allowed: bool
    refused_index: int | None  # the bucket that refused (0-based), None when allowed
    retry_after_s: float
    remaining: int


class RedisBuckets:
    """The shared buckets. Any failure of Redis (unreachable, timed out, refusing) reaches the
    caller as ``SharedStoreUnavailable``, for it to decide without them; nothing here retries."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        timeout_s: float = 0.25,
        prefix: str = "kb:ratelimit",
    ):
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(
            url,
            password=password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._take = self._client.register_script(TAKE)

    async def take(self, buckets: Sequence[Bucket]) -> Taken:
        keys = [f"{self.prefix}:{b.key}" for b in buckets]
        args: list[float | int] = []
        for bucket in buckets:
            args += [bucket.rate_per_s, bucket.capacity]
        try:
            allowed, refused, wait, left = await self._take(keys=keys, args=args)
        except redis.RedisError as exc:
            raise SharedStoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if int(allowed):
            return Taken(True, None, 0.0, max(0, int(float(left))))
        seconds = float(wait)
        return Taken(False, int(refused) - 1, math.inf if seconds < 0 else seconds, 0)

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
