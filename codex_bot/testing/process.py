"""``ServerProcess``: one redis-server (or Sentinel) run from a config file in its own dir;
``ServerGroup``: several of them that must agree, the base of the cluster and Sentinel set-ups.

A config file is written once, on the first start; later starts read it back as the server
left it, because cluster nodes keep their node table beside it and Sentinels rewrite it
with what they learnt.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from redis import Redis
from redis.exceptions import RedisError

from codex_bot.testing.redis_server import RedisServerError

HOST = "127.0.0.1"
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis.log"


def spawn(args: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start one server process; every cluster node and Sentinel set-up process starts here.

    One place, so that a guard against outliving the test process (such as a parent-death
    signal) is added once for all of them.

    Args:
        args: The command line, binary first.

    Returns:
        The running process; its output goes to the log file its config names.
    """
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class ServerProcess:
    """A redis-server on 127.0.0.1 that can be stopped, killed and started again.

    Args:
        binary: Path of redis-server.
        port: TCP port; the same across restarts.
        directory: The server's own working dir (``dir``), created if missing.
        config: Config lines written to ``redis.conf`` on the first start; ``port``,
            ``bind``, ``dir`` and ``logfile`` are added.
        sentinel: Start in sentinel mode (``redis-server redis.conf --sentinel``).
        startup_timeout: Seconds to wait for the server to answer PING.
    """

    def __init__(
        self,
        binary: str,
        port: int,
        directory: Path,
        config: Iterable[str] = (),
        *,
        sentinel: bool = False,
        startup_timeout: float = 10.0,
    ) -> None:
        self.binary = binary
        self.port = port
        self.directory = directory
        self.sentinel = sentinel
        self.startup_timeout = startup_timeout
        self._config = [
            f"port {port}",
            f"bind {HOST}",
            f'dir "{directory}"',
            f'logfile "{directory / LOG_FILE}"',
            *config,
        ]
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: weakref.finalize[..., ServerProcess] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1``."""
        return HOST

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as ``redis.asyncio.sentinel.Sentinel`` takes it."""
        return HOST, self.port

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>``."""
        return f"redis://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def client(self, *, decode_responses: bool = True) -> Redis:
        """A synchronous client of this server, with a 5 s socket timeout; close it after use."""
        return Redis(host=HOST, port=self.port, decode_responses=decode_responses, socket_timeout=5)

    def start(self, *args: str, wait: bool = True) -> None:
        """Start the process unless it runs; by default wait until it answers PING.

        Args:
            args: Extra ``--option value`` arguments for this start only.
            wait: Wait for PING; pass False to start several servers before waiting.

        Raises:
            RedisServerError: It exited or did not answer in ``startup_timeout`` seconds.
        """
        if self.running:
            return
        config = self.directory / CONFIG_FILE
        if not config.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            config.write_text("\n".join(self._config) + "\n")
        mode = ["--sentinel"] if self.sentinel else []
        self._process = process = spawn([self.binary, str(config), *mode, *args])
        self._reaper = weakref.finalize(self, _kill, process)
        if wait:
            self.wait_until_up()

    def wait_until_up(self) -> None:
        """Wait until the server answers PING.

        Raises:
            RedisServerError: It exited or did not answer in ``startup_timeout`` seconds.
        """
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.running:
            if _answers_ping(self.port):
                return
            time.sleep(0.01)
        self.kill()
        msg = f"redis-server on port {self.port} did not start; see {self.directory / LOG_FILE}"
        raise RedisServerError(msg)

    def stop(self) -> None:
        """Shut the server down (SIGTERM) and wait for it to exit."""
        self._end(kill=False)

    def kill(self) -> None:
        """Kill the server (SIGKILL), as a crash would."""
        self._end(kill=True)

    def wipe(self, keep: Iterable[str] = ()) -> None:
        """Delete the data files of a stopped server: all but its config, log and ``keep``.

        Raises:
            RuntimeError: The server is running.
        """
        if self.running:
            msg = f"stop the server on port {self.port} before wiping its data"
            raise RuntimeError(msg)
        kept = {CONFIG_FILE, LOG_FILE, *keep}
        for path in self.directory.iterdir():
            if path.name in kept:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if self._reaper is not None:
            self._reaper.detach()
            self._reaper = None
        if process is not None:
            _end(process, kill=kill)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state}>"


def _end(process: subprocess.Popen[bytes], *, kill: bool) -> None:
    if process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Finalizer: a server whose owner was collected (or the interpreter exits) dies too."""
    _end(process, kill=True)


def _answers_ping(port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection((HOST, port), timeout=0.5) as sock,
    ):
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


class ServerGroup:
    """Several :class:`ServerProcess` under one temp dir, that must come to agree.

    The base of ``RedisClusterServer`` and ``RedisSentinelServer``: subclasses say what
    keeps them from being ready (:meth:`_problems`); the group waits for it, and stops
    its processes and removes its dir on :meth:`close`, on garbage collection or at exit.
    """

    def __init__(self, prefix: str, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self._root = Path(tempfile.mkdtemp(prefix=prefix))
        self._processes: list[ServerProcess] = []
        self._cleanup = weakref.finalize(self, _remove, self._processes, self._root)

    def is_ready(self) -> bool:
        """Whether every process runs and they all agree (see the subclass)."""
        return self._problem() is None

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait until :meth:`is_ready`.

        Args:
            timeout: Seconds; ``startup_timeout`` when None.

        Raises:
            RedisServerError: Not ready in time; the message says what was missing.
        """
        self._wait(self.is_ready, "all to be ready", timeout)

    def close(self) -> None:
        """Stop every process and remove the temp dirs."""
        self._cleanup()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Self:
        """Start every process and wait until they agree."""
        raise NotImplementedError

    def _add(self, process: ServerProcess) -> None:
        self._processes.append(process)

    def _problems(self) -> Iterator[str]:
        """What keeps the group from being ready; nothing when it is."""
        raise NotImplementedError

    def _problem(self) -> str | None:
        try:
            return next(self._problems(), None)
        except RedisError as exc:
            return str(exc)

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        while True:
            with contextlib.suppress(RedisError):  # a server on its way down or up
                if ready():
                    return
            if time.monotonic() > deadline:
                msg = f"timed out waiting for {what}: {self._problem()}"
                raise RedisServerError(msg)
            time.sleep(0.05)


def _remove(processes: Iterable[ServerProcess], root: Path) -> None:
    for process in processes:
        process.stop()
    shutil.rmtree(root, ignore_errors=True)
