"""One runner per experiment: an ``O_EXCL`` lease with a heartbeat, safe on NFS.

``<experiment>/.raysweep.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on local
filesystems and on NFS v3+) and holds, as JSON, who holds it: host, pid, command, start time
and a random token. While the holder runs, a daemon thread touches the file every
:data:`HEARTBEAT_S` seconds. A second runner reads the file and

- refuses with one line naming the holder (host, pid, since when) while the heartbeat is fresh
  and, on the same host, the holder's pid is alive;
- takes the lock over when the heartbeat is older than :data:`STALE_AFTER_S` (a driver killed
  on another node, or a node that died), or at once when the holder ran on this host and its
  pid no longer exists (a SIGKILLed driver).

A takeover is itself guarded by a short-lived ``.raysweep.lock.takeover`` file, and removes the
lock only if it still holds the stale holder's token, so two runners that both find the lock
stale cannot both win. Nothing here is unpickled: the lock is JSON, read by
:func:`raysweep.storage.reading.read_json`. A lock file whose content is not such a record (a runner
killed while writing it, or a damaged or planted file) is a holder of unknown identity whose
heartbeat is the file's modification time: it holds the experiment until it is stale, and every
message says that it is unreadable and why. A lock that is a folder, or a symbolic link out of
the experiment directory, is never read, taken over or removed: runners refuse to start until a
person removes it.

In an object store (``storage: s3://...``) there is no exclusive create: the lock is an object
written, then read back after :data:`SETTLE_S` seconds (the stores raysweep supports read their
own writes), and the runner whose token is found holds it; two runners starting within the same
fraction of a second on different machines could still both be told they won, which is why a
cluster should start its runs through one job queue (``ray job submit``). The heartbeat rewrites
the object.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysweep.defaults import LOCK_HEARTBEAT_S, lock_stale_s
from raysweep.errors import RaysweepError
from raysweep.storage.paths import AnyPath, StoragePath, storage_path
from raysweep.storage.reading import StoredFileError, check_fields, int_field, read_json, str_field

LOCK_FILE = ".raysweep.lock"
#: Seconds between two heartbeats of the holder (:mod:`raysweep.defaults`; the age of a
#: stale heartbeat is :func:`~raysweep.defaults.lock_stale_s`).
HEARTBEAT_S = LOCK_HEARTBEAT_S
#: The largest process id a lock may record (``pid_t`` is a signed 32-bit integer; Linux's
#: ``pid_max`` is at most 2**22).
MAX_PID = 2**31 - 1
#: A lock file is a few hundred bytes of JSON.
MAX_LOCK_BYTES = 64 * 1024
#: Seconds an object-store lock is left to settle before it is read back.
SETTLE_S = 1.0


class ExperimentLocked(RaysweepError):
    """Another runner holds the experiment's lock."""


@dataclass(frozen=True)
class Holder:
    """What a lock file says about its holder, and how old its heartbeat is."""

    host: str
    pid: int
    since: str
    command: str
    token: str
    heartbeat_age_s: float
    unreadable: str = ""  # why the file is no lock record ("" when it is one)

    def describe(self) -> str:
        if self.unreadable:
            return (f"an unknown runner (the lock file is unreadable: {self.unreadable}; last "
                    f"touched {self.heartbeat_age_s:.0f} s ago)")
        return (f"{self.host} pid {self.pid} since {self.since} (last heartbeat "
                f"{self.heartbeat_age_s:.0f} s ago; {self.command})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class UnusableLock(ExperimentLocked):
    """The lock path is a folder or a symbolic link out of the experiment: nobody may take it
    over; a person must remove it."""


def read_holder(path: AnyPath) -> Holder | None:
    """The holder recorded in the lock file ``path`` (None when there is no lock file). A file
    that is no lock record (empty, damaged, of wrong types: a runner killed while creating it,
    or a planted file) is a holder of unknown identity whose heartbeat is the file's mtime, with
    ``unreadable`` saying why. Raises :class:`UnusableLock` when ``path`` is a folder or a
    symbolic link out of its experiment."""
    try:
        mtime = path.stat().st_mtime if isinstance(path, StoragePath) else os.lstat(path).st_mtime
        data = read_json(path, root=path.parent, limit=MAX_LOCK_BYTES)
        fields = check_fields(data, path, {"host": str_field, "pid": int_field(1, MAX_PID),
                                           "since": str_field, "token": str_field})
    except FileNotFoundError:
        return None
    except StoredFileError as err:
        if err.reason.startswith(("a folder", "a symbolic link")):
            raise UnusableLock(f"{path} is {err.reason}, not a lock file: raysweep neither "
                               "reads nor removes it; remove it if no run is going") from None
        return Holder(host="?", pid=0, since="?", command="", token="",
                      heartbeat_age_s=max(0.0, time.time() - mtime), unreadable=err.reason)
    return Holder(host=fields["host"][:200], pid=fields["pid"], since=fields["since"][:64],
                  command=str(data.get("command", ""))[:200], token=fields["token"],
                  heartbeat_age_s=max(0.0, time.time() - mtime))


def is_stale(holder: Holder, *, stale_after_s: float | None = None) -> bool:
    """A holder is gone when its heartbeat stopped (older than ``stale_after_s``, default
    :func:`~raysweep.defaults.lock_stale_s`), or when it ran here and its pid is dead."""
    if stale_after_s is None:
        stale_after_s = lock_stale_s()
    if holder.heartbeat_age_s > stale_after_s:
        return True
    return holder.host == socket.gethostname() and holder.pid > 0 and not _pid_alive(holder.pid)


def _create_exclusive(path: AnyPath, payload: dict[str, Any]) -> bool:
    """Create ``path`` with ``payload`` as JSON iff it does not exist; True when created (in
    an object store: written, settled and read back with our token)."""
    if isinstance(path, StoragePath):
        if path.exists():
            return False
        path.write_text(json.dumps(payload))
        time.sleep(SETTLE_S)
        holder = read_holder(path)
        return holder is not None and holder.token == payload["token"]
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _touch(path: AnyPath, payload: dict[str, Any]) -> None:
    """One heartbeat: a new mtime (an object is rewritten)."""
    if isinstance(path, StoragePath):
        holder = read_holder(path)
        if holder is not None and holder.token == payload["token"]:
            path.write_text(json.dumps(payload))
    else:
        os.utime(path)


class ExperimentLock:
    """The lease of one experiment directory (a context manager).

    ``with ExperimentLock(spec.directory): ...`` raises :class:`ExperimentLocked` (one line
    naming the holder) when another live runner holds it.
    """

    def __init__(self, directory: str | os.PathLike[str], *, command: str | None = None,
                 heartbeat_s: float = HEARTBEAT_S, stale_after_s: float | None = None):
        self.directory = storage_path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])[:200]
        self.heartbeat_s = heartbeat_s
        self.stale_after_s = lock_stale_s() if stale_after_s is None else stale_after_s
        self.token = uuid.uuid4().hex
        self.took_over: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- acquiring ---------------------------------------------------------------------------

    def _refusal(self, holder: Holder) -> ExperimentLocked:
        return ExperimentLocked(
            f"{self.directory}: another raysweep run holds this experiment: "
            f"{holder.describe()}; wait for it, or remove {self.path} if that run is gone")

    def refuse_if_held(self) -> None:
        """Raise :class:`ExperimentLocked` when a live runner holds the experiment now; reads
        only (a runner calls it before starting Ray, so that a refusal is immediate and
        writes nothing; :meth:`acquire` still decides)."""
        holder = read_holder(self.path)
        if holder is not None and not is_stale(holder, stale_after_s=self.stale_after_s):
            raise self._refusal(holder)

    def acquire(self) -> ExperimentLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {"host": socket.gethostname(), "pid": os.getpid(),
                   "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": self.command,
                   "token": self.token}
        for _ in range(5):
            if _create_exclusive(self.path, payload):
                self._start_heartbeat(payload)
                return self
            holder = read_holder(self.path)
            if holder is None:
                continue  # released between our attempts
            if not is_stale(holder, stale_after_s=self.stale_after_s):
                raise self._refusal(holder)
            self._remove_stale(holder)
        raise ExperimentLocked(f"{self.directory}: could not take the lock {self.path} "
                               "(other runners keep taking it)")

    def _remove_stale(self, holder: Holder) -> None:
        """Delete the lock iff it still is ``holder``'s, under the takeover guard."""
        guard = self.path.with_name(LOCK_FILE + ".takeover")
        if not _create_exclusive(guard, {"pid": os.getpid(), "host": socket.gethostname()}):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > self.stale_after_s:
                    guard.unlink()  # a takeover that was itself killed
            return
        try:
            current = read_holder(self.path)
            if current is not None and current.token == holder.token and is_stale(
                    current, stale_after_s=self.stale_after_s):
                self.path.unlink()
                self.took_over = holder
                print(f"raysweep: took over the lock of {holder.describe()}", file=sys.stderr)
        finally:
            with contextlib.suppress(FileNotFoundError):
                guard.unlink()

    # -- holding -----------------------------------------------------------------------------

    def _start_heartbeat(self, payload: dict[str, Any]) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                with contextlib.suppress(Exception):  # a missed beat is retried next time
                    _touch(self.path, payload)

        self._thread = threading.Thread(target=beat, name="raysweep-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
