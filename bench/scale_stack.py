"""The processes of the scale-out bench (bench/scale.py), each started here on a free port of
this machine: redis-server without persistence, vllm-router in front of the engines, `rag-api`
replicas, and nginx in front of them with deploy/nginx.conf's settings.

Each is a ``Child``: its own session (stopped as a whole process group, so nothing it spawned
stays behind), its output in a log under the run's folder, and a death signal from this process
(on Linux), so that even a killed bench leaves no process running.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from rag.engine.process import _die_with_parent  # the engine's own, for every child here

NGINX_TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
NGINX_TEMP_MODULES = ("fastcgi", "uwsgi", "scgi")  # each has a temp path when compiled in


class StackError(RuntimeError):
    """A process of the stack did not start, or a tool it needs is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def executable(name: str) -> str | None:
    """``name`` beside this Python (a venv's console scripts), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


class Child:
    """One process of the stack, in its own session, logging to ``log_path``."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name, self.command, self.log_path = name, list(command), log_path
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM its process group, SIGKILL what is left after ``grace`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(ProcessLookupError):  # and whatever it spawned
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_http(self, url: str, timeout: float, what: str = "ready") -> None:
        """Until GET ``url`` answers 200; StackError with the log's tail if it exits or the
        time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise StackError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                if httpx.get(url, timeout=3.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} was not {what} after {timeout:.0f} s ({url}):\n{self.log_tail()}"
                )
            time.sleep(0.5)


def redis_server(workdir: Path) -> tuple[Child, str]:
    """redis-server on a free port of the loopback, without persistence; (child, URL)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("needs redis-server (Debian: sudo apt-get install redis-server)")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir)]
    child = Child("redis-server", command, workdir / "redis.log").start()
    deadline = time.monotonic() + 15
    while not _redis_pong(port):
        if not child.running() or time.monotonic() > deadline:
            raise StackError(f"redis-server did not start:\n{child.log_tail()}")
        time.sleep(0.1)
    return child, f"redis://127.0.0.1:{port}/0"


def _redis_pong(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def vllm_router(engines: Sequence[str], policy: str, workdir: Path) -> tuple[Child, str]:
    """vllm-router (deploy/router's) on a free port in front of ``engines``; (child, URL)."""
    binary = executable("vllm-router")
    if binary is None:
        raise StackError("needs vllm-router (pip install vllm-router==0.1.17, in .[dev])")
    port = free_port()
    command = [binary, "--host", "127.0.0.1", "--port", str(port), "--policy", policy]
    command += ["--worker-urls", *engines]
    command += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    child = Child("vllm-router", command, workdir / "router.log").start()
    url = f"http://127.0.0.1:{port}"
    child.wait_http(f"{url}/health", timeout=120, what="healthy (all engines)")
    return child, url


def rag_api(name: str, env: Mapping[str, str], workdir: Path) -> Child:
    """`rag-api` with ``env`` (its RAG_* settings) over the inherited environment."""
    binary = executable("rag-api")
    if binary is None:
        raise StackError("needs rag-api (make install-service)")
    environ = {k: v for k, v in os.environ.items() if k != "RAG_QDRANT_URL"}
    return Child(name, [binary], workdir / f"{name}.log", {**environ, **env}).start()


def nginx_config(
    template: str, upstreams: Sequence[str], port: int, prefix: Path, temp_modules: Sequence[str]
) -> str:
    """deploy/nginx.conf for local processes: ``upstreams`` (host:port) instead of Docker's
    replicas (no resolver), the loopback ``port``, and the pid, logs and temp files under
    ``prefix``. Raises StackError when the template no longer has a line it replaces."""
    text = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("#"))
    servers = "".join(f"        server {u};\n" for u in upstreams)
    temps = ("client_body", "proxy", *temp_modules)
    temp = "".join(f"    {m}_temp_path {prefix / m};\n" for m in temps)
    head = f"daemon off;\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'} warn;\n"
    if os.geteuid() == 0:  # as root nginx runs its workers as nobody, who cannot reach prefix
        head += f"user {pwd.getpwuid(os.geteuid()).pw_name};\n"
    edits = {
        r"^\s*resolver [^;]*;\n": "",
        r"^\s*server \S+ resolve;\n": servers,
        r"^(\s*)listen \d+;": f"        listen 127.0.0.1:{port};",
        r"^http \{\n": f"http {{\n    access_log off;\n{temp}",
    }
    for pattern, replacement in edits.items():
        literal = replacement.replace("\\", "\\\\")  # no group references in it
        text, found = re.subn(pattern, literal, text, count=1, flags=re.M)
        if not found:
            raise StackError(f"deploy/nginx.conf has no line like {pattern!r} any more")
    return f"# Generated by bench/scale.py from deploy/nginx.conf.\n{head}{text.lstrip()}\n"


def nginx(upstreams: Sequence[str], workdir: Path) -> tuple[Child, str]:
    """nginx on a free port in front of ``upstreams``; (child, URL)."""
    binary = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if binary is None:
        raise StackError("needs nginx as the balancer (Debian: sudo apt-get install nginx-light)")
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False).stderr
    modules = [m for m in NGINX_TEMP_MODULES if f"--without-http_{m}_module" not in built]
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(NGINX_TEMPLATE.read_text(), upstreams, port, prefix, modules))
    command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    child = Child("nginx", command, prefix / "nginx.log").start()
    url = f"http://127.0.0.1:{port}"
    child.wait_http(f"{url}/lb-healthz", timeout=30)
    return child, url
