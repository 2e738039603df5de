"""One trainer per checkpoint folder: the folder's lock (:class:`TrainingLock`) and its refusal
(:class:`TrainingLockedError`)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.bundles import process_alive

LOCK_NAME = ".train.lock"


class TrainingLockedError(ValueError):
    """Another training run holds the checkpoint folder (:class:`TrainingLock`)."""


class TrainingLock:
    """The lock of a checkpoint folder: one training run at a time writes there.

    The lock is ``<folder>/.train.lock``, held with ``flock`` (released by the kernel when its holders die, also
    by ``kill -9``) and holding the holder's PID, host, start time and command, and the PID of its bundle run;
    the bundle run inherits the descriptor, so the folder stays locked until both have exited. A lock file whose
    holders are gone is stale: it is taken over (:attr:`taken_over` then holds what it said). Where the file
    system has no ``flock``, a lock whose PID is alive on this host (or that comes from another host) counts as
    held.

    Use it as a context manager (``with TrainingLock(folder) as lock: ...``), which creates the folder.

    Raises (on entry):
        TrainingLockedError: a live run holds it; the message names the folder and that run's PID and host.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None
        self.taken_over: dict[str, Any] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> TrainingLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @staticmethod
    def _read(fd: int) -> dict[str, Any] | None:
        try:
            text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
        except OSError:
            return None
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return {"unreadable": text[:200]}
        return value if isinstance(value, dict) else {"unreadable": text[:200]}

    def _write(self) -> None:
        data = (json.dumps(self.info, indent=1) + "\n").encode()
        try:  # best effort: on a full disk the lock still holds, only its description is missing
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
            os.fsync(self.fd)
        except OSError:
            pass

    def _flock(self, fd: int) -> bool | None:
        """True: locked; False: held by another; None: this file system cannot flock."""
        try:
            import fcntl
        except ImportError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return None
        return True

    def holder_alive(self, holder: Mapping[str, Any] | None) -> bool:
        """Whether the run a lock file describes may still run (used where ``flock`` is unavailable)."""
        if not holder:
            return False
        if holder.get("host") not in (None, socket.gethostname()):
            return True  # another host's run cannot be checked from here
        return any(process_alive(holder.get(key)) for key in ("pid", "child_pid") if holder.get(key))

    def describe(self, holder: Mapping[str, Any] | None) -> str:
        """``PID 123 on host h (started ...; its bundle run is PID 124)``, from a lock file's content."""
        if not holder or "pid" not in holder:
            return f"a run whose lock {self.path} does not say which"
        text = f"PID {holder.get('pid')} on host {holder.get('host', '?')}"
        extra = [f"started {holder['started']}"] if holder.get("started") else []
        if holder.get("child_pid"):
            extra.append(f"its bundle run is PID {holder['child_pid']}")
        return text + (f" ({'; '.join(extra)})" if extra else "")

    def _busy(self, holder: Mapping[str, Any] | None) -> TrainingLockedError:
        pid = (holder or {}).get("pid")
        stop = f" (`kill {pid}` stops it after the current iteration, with a checkpoint)" if pid else ""
        return TrainingLockedError(
            f"another training run is using {self.folder}: {self.describe(holder)}. Two trainers in one folder "
            f"would overwrite each other's checkpoints, so this one does not start. Wait for that run to end or stop "
            f"it{stop}, then run the same command again to resume; if no such run is active, remove {self.path}"
        )

    def acquire(self) -> TrainingLock:
        """Take the lock (creating the folder), or raise :class:`TrainingLockedError`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
                previous = self._read(fd)
                if locked is False or (locked is None and self.holder_alive(previous)):
                    raise self._busy(previous)
                try:  # a holder that released meanwhile removed the file: lock the one now at the path
                    current = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if not current:
                os.close(fd)
                continue
            self.fd, self.taken_over = fd, previous
            self.info = {"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}
            self._write()
            return self
        raise TrainingLockedError(f"could not take the lock {self.path}: it keeps being replaced; is another run "
                                  "starting in the same folder?")

    def record_child(self, pid: int) -> None:
        """Record the PID of the bundle run (which inherited the lock) in the lock file."""
        if self.fd is not None:
            self.info["child_pid"] = int(pid)
            self._write()

    def release(self) -> None:
        """Remove the lock file and let go of the lock (a no-op when not held)."""
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None

