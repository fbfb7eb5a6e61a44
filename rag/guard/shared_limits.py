"""Per-key rate limits that several API replicas enforce together, in Redis.

The same token buckets as ``RateLimiter`` (rag/guard/ratelimit.py), kept in Redis hashes and
updated by one Lua script per call, so a check and its take are atomic across replicas and the
clock is the server's. A key behind a balancer gets its limit once, not once per replica. A
bucket's hash expires once it would be full again (an absent bucket is a full one); its name
carries the limits, so a key whose limits change starts with full buckets, as locally.

While Redis is away each replica falls back to its own buckets (``RateLimiter``): per-replica
limits, with the warning and metric of ``SharedState``; never an error to the caller.
"""

from __future__ import annotations

from typing import Any

from rag.guard.keys import Principal
from rag.guard.ratelimit import RateLimitedError, RateLimiter
from rag.shared import SharedState, SharedStateDown

# Shared by both scripts: a bucket's level now (absent: full), from the server's clock.
_REFILL = """
local function level_of(key, cap, rate, now)
  local v = redis.call('HMGET', key, 'l', 's')
  local level, stamp = tonumber(v[1]), tonumber(v[2])
  if level == nil then return cap end
  return math.min(cap, level + (now - stamp) * rate)
end
local function save(key, level, cap, rate, now)
  redis.call('HSET', key, 'l', tostring(level), 's', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((cap - level) / rate * 1000) + 1000)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: request bucket, token bucket; ARGV: requests' capacity and rate, tokens' capacity and
# rate (a rate of 0: no such limit). {0}: taken; {1, wait}: tokens spent; {2, wait}: too fast.
CHECK_REQUEST = (
    _REFILL
    + """
local rcap, rrate = tonumber(ARGV[1]), tonumber(ARGV[2])
local tcap, trate = tonumber(ARGV[3]), tonumber(ARGV[4])
if trate > 0 then
  local tokens = level_of(KEYS[2], tcap, trate, now)
  if tokens <= 0 then return {1, tostring((1 - tokens) / trate)} end
end
if rrate > 0 then
  local level = level_of(KEYS[1], rcap, rrate, now)
  local need = math.min(1, rcap) - level
  if need > 0 then return {2, tostring(need / rrate)} end
  save(KEYS[1], level - 1, rcap, rrate, now)
end
return {0, '0'}
"""
)

# KEYS: token bucket; ARGV: capacity, rate, tokens. {0}: taken; {1, wait}: not now.
CHARGE_TOKENS = (
    _REFILL
    + """
local cap, rate, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local level = level_of(KEYS[1], cap, rate, now)
local need = math.min(n, cap) - level
if need > 0 then return {1, tostring(need / rate)} end
save(KEYS[1], level - n, cap, rate, now)
return {0, '0'}
"""
)


class SharedRateLimiter(RateLimiter):
    """``RateLimiter``'s buckets in Redis; its own (per-replica) buckets while Redis is away."""

    def __init__(self, shared: SharedState, rps: float, tokens_per_minute: int) -> None:
        super().__init__(rps, tokens_per_minute)
        self.shared = shared
        self._check = shared.sync.register_script(CHECK_REQUEST)
        self._charge = shared.sync.register_script(CHARGE_TOKENS)

    def _limits(self, principal: Principal) -> tuple[float, int]:
        rps = principal.limits.rps or self.default_rps
        tpm = principal.limits.tokens_per_minute or self.default_tokens_per_minute
        return rps, tpm

    def _bucket_names(self, principal: Principal, rps: float, tpm: int) -> list[str]:
        name = principal.name
        return [self.shared.key("rl", name, f"r{rps:g}"), self.shared.key("rl", name, f"t{tpm}")]

    def check_request(self, principal: Principal) -> None:
        rps, tpm = self._limits(principal)
        if rps <= 0 and tpm <= 0:
            return
        args: list[Any] = [max(1.0, rps), rps, tpm, tpm / 60]
        try:
            code, wait = self.shared.call(
                lambda _: self._check(keys=self._bucket_names(principal, rps, tpm), args=args)
            )
        except SharedStateDown:
            super().check_request(principal)
            return
        if int(code) == 1:
            raise RateLimitedError(
                f"key {principal.name!r} spent its {tpm} prompt tokens per minute; "
                f"retry in {float(wait):.1f} s",
                float(wait),
            )
        if int(code) == 2:
            raise RateLimitedError(
                f"key {principal.name!r} is over {rps:g} requests per second; "
                f"retry in {float(wait):.1f} s",
                float(wait),
            )

    def charge_tokens(self, principal: Principal, n: int) -> None:
        rps, tpm = self._limits(principal)
        if tpm <= 0:
            return
        key = self._bucket_names(principal, rps, tpm)[1]
        try:
            code, wait = self.shared.call(
                lambda _: self._charge(keys=[key], args=[tpm, tpm / 60, n])
            )
        except SharedStateDown:
            super().charge_tokens(principal, n)
            return
        if int(code) != 0:
            raise RateLimitedError(
                f"a {n}-token prompt is over key {principal.name!r}'s {tpm} prompt tokens per "
                f"minute; retry in {float(wait):.1f} s",
                float(wait),
            )
