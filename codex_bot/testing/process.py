"""``ServerProcess``: one redis-server (or Sentinel) run from a config file in its own dir;
``ServerGroup``: several of them that must agree, the base of the cluster and Sentinel set-ups.

A config file is written once, on the first start; later starts read it back as the server
left it, because cluster nodes keep their node table beside it and Sentinels rewrite it
with what they learnt.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Self

from redis import Redis
from redis.exceptions import RedisError

from codex_bot.testing.owned_process import end, spawn
from codex_bot.testing.redis_server import RedisServerError, answers_ping

HOST = "127.0.0.1"
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis.log"


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
        self._config = [
            f"port {port}",
            f"bind {HOST}",
            f'dir "{directory}"',
            f'logfile "{directory / LOG_FILE}"',
            *config,
        ]
        self.binary = binary
        self.port = port
        self.directory = directory
        self.sentinel = sentinel
        self.startup_timeout = startup_timeout
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
            if answers_ping(self.port):
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
            end(process, kill=kill)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state}>"


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Finalizer: a server whose owner was collected (or the interpreter exits) dies too."""
    end(process, kill=True)


class ServerGroup:
    """Several :class:`ServerProcess` under one temp dir, that must come to agree.

    The base of ``RedisClusterServer`` and ``RedisSentinelServer``: subclasses say what
    keeps them from being ready (:meth:`_problems`); the group waits for it, and stops
    its processes and removes its dir on :meth:`close`, on garbage collection or at exit.
    """

    ready_means: ClassVar[str] = "every process to run and all to agree"
    """What :meth:`is_ready` waits for, as the subclass defines it; timeouts name it."""

    def __init__(self, prefix: str, startup_timeout: float) -> None:
        self.startup_timeout = startup_timeout
        self._root = Path(tempfile.mkdtemp(prefix=prefix))
        self._processes: list[ServerProcess] = []
        self._cleanup = weakref.finalize(self, _remove, self._processes, self._root)

    def is_ready(self) -> bool:
        """Whether every process runs and they all agree (see :attr:`ready_means`)."""
        return self._problem() is None

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Wait until :meth:`is_ready` (see :attr:`ready_means`).

        Args:
            timeout: Seconds; ``startup_timeout`` when None.

        Raises:
            RedisServerError: Not ready in time; the message says what was missing.
        """
        self._wait(self.is_ready, self.ready_means, timeout)

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

    def __exit__(self, *exc_info: object) -> None:
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
