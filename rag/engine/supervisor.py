"""Watching the engine: its state for asks and /readyz, and restarts of a managed engine.

A managed engine (an `EngineProcess`) is polled every second: when its server exits, what is
left of its process group is killed and it is started again after a back-off; when it stops
answering its health check it is stopped and restarted the same way. An external engine
(``RAG_LLM_URL``) is only probed: it is marked down and up again as its health check says.

Run it on the event loop of the service's main thread: a restarted engine is spawned from that
thread, and the parent-death signal that takes the engine down with the service follows the
spawning thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from rag.engine.client import EngineUnavailableError
from rag.engine.process import EngineProcess

log = logging.getLogger("rag.engine")

EngineState = Literal["starting", "ready", "down", "restarting"]
BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0)


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    reason: str
    since: float  # wall-clock seconds (time.time()) when this state began

    def describe(self) -> str:
        age = time.time() - self.since
        return f"{self.state} for {age:.0f} s: {self.reason}"


class EngineSupervisor:
    def __init__(
        self,
        probe: Callable[[], Awaitable[bool]],
        process: EngineProcess | None = None,
        *,
        interval: float = 1.0,
        failures_before_down: int = 3,
        start_timeout: float = 900.0,
        backoff: Sequence[float] = BACKOFF_S,
        on_restart: Callable[[], None] | None = None,
        on_ready: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.probe = probe
        self.process = process
        self.interval = interval
        self.failures_before_down = failures_before_down
        self.start_timeout = start_timeout
        self.backoff = tuple(backoff)
        self.on_restart = on_restart
        self.on_ready = on_ready  # e.g. re-read the served model: a restart may change it
        self.restarts = 0
        self._status = EngineStatus(
            "starting", "waiting for the engine's first health check", time.time()
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> EngineStatus:
        return self._status

    @property
    def ready(self) -> bool:
        return self._status.state == "ready"

    def retry_after(self) -> int:
        """Seconds a client should wait: longer while a managed engine (re)starts."""
        return 5 if self.process is None else 15

    def check(self) -> None:
        """Raise at once (no engine round trip) when the engine is known not to be ready."""
        if not self.ready:
            raise EngineUnavailableError(
                f"the engine is {self._status.describe()}", retry_after=self.retry_after()
            )

    def _set(self, state: EngineState, reason: str) -> None:
        if state != self._status.state or reason != self._status.reason:
            level = logging.INFO if state == "ready" else logging.WARNING
            log.log(level, "engine %s: %s", state, reason)
            self._status = EngineStatus(state, reason, time.time())

    async def probe_once(self) -> bool:
        healthy = await self.probe()
        if healthy and not self.ready:
            if self.on_ready is not None:
                try:
                    await self.on_ready()
                except Exception as exc:  # healthy but not serving (yet): probe again
                    self._set("down", f"the engine is healthy but not usable: {exc}")
                    return False
            self._set("ready", "answering its health check")
        return healthy

    async def relearn(self) -> None:
        """Run ``on_ready`` again while the engine is ready: what it serves has changed (a
        replica behind its router stopped or came back); when it fails, it is logged only."""
        if not self.ready or self.on_ready is None:
            return  # not ready: on_ready runs when it is
        try:
            await self.on_ready()
        except Exception as exc:
            log.warning("re-reading the engine after a change failed: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-supervisor")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        if self.process is None:
            await self._watch_external()
        else:
            await self._watch_managed(self.process)

    async def _watch_external(self) -> None:
        failures = 0
        while True:
            if await self.probe_once():
                failures = 0
            else:
                failures += 1
                if failures >= self.failures_before_down or self._status.state == "starting":
                    self._set("down", "the engine does not answer its health check")
            await asyncio.sleep(self.interval)

    async def _watch_managed(self, process: EngineProcess) -> None:
        started = time.monotonic()
        failures = attempt = 0
        while True:
            await asyncio.sleep(self.interval)
            code = process.exit_code()
            if code is not None or not process.running():
                reason = f"the engine exited with status {code} (see {process.log_path})"
            elif await self.probe_once():
                failures = attempt = 0
                continue
            elif self.ready:
                failures += 1
                if failures < self.failures_before_down:
                    continue
                reason = "the engine stopped answering its health check"
            elif time.monotonic() - started > self.start_timeout:
                reason = f"the engine was not healthy after {self.start_timeout:.0f} s"
            else:
                continue
            await self._restart(process, reason, attempt)
            attempt += 1
            started, failures = time.monotonic(), 0

    async def _restart(self, process: EngineProcess, reason: str, attempt: int) -> None:
        self._set("down", reason)
        await asyncio.to_thread(process.stop, 5.0)  # the rest of its group, workers included
        delay = self.backoff[min(attempt, len(self.backoff) - 1)]
        await asyncio.sleep(delay)
        process.start()  # from the event loop's thread: see the module's docstring
        self.restarts += 1
        if self.on_restart is not None:
            self.on_restart()
        self._set("restarting", f"restart {self.restarts} after: {reason}")
