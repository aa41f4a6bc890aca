"""One `albench run` per results folder at a time: a lock held for the length of the run.

Two drivers on one folder never duplicate rows (the bookkeeper writes each round once), but both would compute
every trial. The lock is an advisory `flock` on RESULTS/albench.lock, which also says who holds it (host, pid,
start time, command). The kernel drops a `flock` when its process dies, so a lock left by a driver killed with
`kill -9` is free at once: the next run takes it over and says whose it was, and resume after a crash keeps
working. On a shared filesystem the lock holds as far as its `flock` does (NFSv4 maps it to a lease-bound lock).
`albench status` and `albench report` only read, and take no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from experiments.errors import AlbenchError

LOCK_FILE = "albench.lock"


def _holder(text: str) -> dict | None:
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict | None) -> str:
    if holder is None:
        return "an albench run that did not say who it is"
    return (
        f"albench pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')} "
        f"({holder.get('command')})"
    )


@contextlib.contextmanager
def results_lock(results: Path, report: Callable[[str], None]) -> Iterator[None]:
    """Holds the results folder's lock while the block runs; refuses, naming the holder, if another run has it."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path.read_text())
            pid = f" (kill {holder.get('pid')} on {holder.get('host')})" if holder else ""
            raise AlbenchError(
                f"{results} is in use by {_describe(holder)}. Wait for that run to end, or stop it{pid}; "
                "`albench status` and `albench report` can read the folder meanwhile"
            ) from None
        left = os.read(fd, 1 << 16).decode(errors="replace")
        if left.strip():  # written by a run that did not release it: it died (a live one would hold the flock)
            report(f"took over the lock of {results} left by {_describe(_holder(left))}, which is no longer running")
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["albench", *sys.argv[1:]]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
    finally:
        os.close(fd)  # closing drops the flock
