"""Child processes that do not outlive the process that started them.

On Linux the child asks the kernel to SIGKILL it when its parent dies
(``prctl(PR_SET_PDEATHSIG)``), so it goes with its owner however the owner ends: SIGTERM,
SIGKILL, a crash or a normal exit. The kernel sends that signal when the *thread* that
forked the child exits, not the process; every child is therefore forked from one thread
of this module that lives as long as the interpreter, so a server started from a
short-lived thread (``asyncio.to_thread``, a thread pool) is not killed with that thread.

Elsewhere (macOS, Windows) there is no such signal: :class:`RedisServer` stops its server
when it is closed and at a normal interpreter exit, but an owner killed by a signal leaves
the server running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

_PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""

_lock = threading.Lock()
_spawner: ThreadPoolExecutor | None = None
_spawner_pid = 0
"""The process that created ``_spawner``: a forked child has the object but not its thread."""
_prctl: Callable[..., int] | None = None
_prctl_loaded = False


def dies_with_owner() -> bool:
    """Whether children started by :func:`spawn` die with this process even when it is
    killed (Linux, with a loadable libc)."""
    return _load_prctl() is not None


def spawn(args: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start ``args`` with no stdin or output, tied to this process's life where possible.

    Args:
        args: The program and its arguments.

    Returns:
        The running child.

    Raises:
        OSError: the program cannot be started.
    """
    prctl = _load_prctl()
    if prctl is None:
        return _popen(args, None)
    owner = os.getpid()

    def die_with_owner() -> None:
        # runs in the child between fork and exec: no imports, no allocation-heavy work
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != owner:  # the owner died before the request took effect
            os._exit(1)

    return _spawner_thread().submit(_popen, args, die_with_owner).result()


def end(process: subprocess.Popen[bytes], *, kill: bool) -> None:
    """Stop a child: SIGTERM (SIGKILL with ``kill``), then wait; SIGKILL after 10 s."""
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


def _popen(args: Sequence[str], preexec: Callable[[], None] | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec,  # noqa: PLW1509 - only prctl and getppid run in the child
    )


def _spawner_thread() -> ThreadPoolExecutor:
    """One worker thread, idle between spawns, that ends only when the interpreter does."""
    global _spawner, _spawner_pid  # noqa: PLW0603 - one spawner per process, made on first use
    with _lock:
        if _spawner is None or _spawner_pid != os.getpid():
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codex-bot-spawner")
            _spawner_pid = os.getpid()
        return _spawner


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux, loaded once in this process (never in a child)."""
    global _prctl, _prctl_loaded  # noqa: PLW0603 - loaded once, on first use
    with _lock:
        if not _prctl_loaded:
            _prctl_loaded = True
            if sys.platform.startswith("linux"):
                try:
                    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                    _prctl = libc.prctl
                except (OSError, AttributeError):
                    _prctl = None
        return _prctl
