"""``codex_bot.testing.RedisServer``: the binaries it can run, and that it never outlives
the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from codex_bot.testing import RedisServer, redis_server_binaries, redis_server_version
from tests._helpers import ROOT
from tests.conftest import wait_for

OWNER = """
import sys, threading
from codex_bot.testing import RedisServer
server = RedisServer(binary=sys.argv[1]).start()
print(server.pid, flush=True)
threading.Event().wait()
"""
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_the_binaries_are_listed_once_per_version() -> None:
    binaries = redis_server_binaries()
    assert binaries
    assert len({binary.version for binary in binaries}) == len(binaries)
    for binary in binaries:
        assert redis_server_version(binary.path) == binary.version
        assert binary.label == "redis-" + ".".join(map(str, binary.version))


@linux_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_the_server_dies_with_the_process_that_started_it(
    sig: signal.Signals, redis_binary: str | None
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", OWNER, redis_binary or ""],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as owner:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        if not line:
            owner.kill()
        assert line, "the owner did not start a server"
        pid = int(line)
        try:
            assert not gone(pid)
            owner.send_signal(sig)
            owner.wait(timeout=10)
            await wait_for(lambda: gone(pid), timeout=5, message=f"redis-server {pid} to exit")
        finally:
            owner.kill()
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@linux_only
async def test_a_server_started_from_a_short_lived_thread_outlives_the_thread(
    redis_binary: str | None,
) -> None:
    server = RedisServer(binary=redis_binary)
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join()
    task = Path(f"/proc/self/task/{starter.native_id}")
    try:
        # the parent-death signal fires when the thread that forked exits: wait until the
        # starting thread is gone from the kernel too, then the server must still answer
        await wait_for(lambda: not task.exists(), timeout=5, message="the thread to exit")
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()
        assert server.running
    finally:
        server.close()
    assert not server.running
