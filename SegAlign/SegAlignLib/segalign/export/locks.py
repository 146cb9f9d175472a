"""Who is writing an export: owner records, whether their process still runs, and the lock on an output folder.

An export in progress says who writes it, in the lock file beside its output (``.NAME.lock``) and in the marker of
its temporary folder (:data:`~segalign.export.folders.PARTIAL_MARKER`): an owner record (:func:`owner`: pid, host,
pid namespace, start time). A later export removes what such a record names only once :func:`owner_is_gone` proves
that process has ended; when in doubt (another host, another container or boot, a pid that may be alive) it is
treated as running, and what it wrote is left alone.

Tests may patch this module's functions (:func:`try_flock`, :func:`pid_namespace`, :func:`pid_running`): the code
calls them through this module, so a patch reaches every caller.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path

from ..errors import SegAlignError

#: The ``written_by`` value that marks what SegAlign wrote: an export's export.json (what makes a folder an export
#: that ``overwrite`` may replace), a lock file, a temporary folder's marker.
WRITTEN_BY = "SegAlign"


def owner() -> dict[str, object]:
    """Who is writing: this process, on this host, since now (for lock files and partial-folder markers)."""
    return {
        "written_by": WRITTEN_BY,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "pid_namespace": pid_namespace(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def pid_namespace() -> str:
    """What makes a pid mean one process: this boot and this pid namespace (containers that share a host name do
    not share pids). Empty where the system does not say (then a host name and pid are all there is)."""
    parts = []
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(source) if source.endswith("/pid") else Path(source).read_text().strip())
        except OSError:
            return ""
    return " ".join(parts)


def read_owner(text: str) -> dict | None:
    """The owner record in ``text`` (a lock file's or a marker's content), or None if it is not one SegAlign wrote."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("written_by") == WRITTEN_BY else None


def owner_is_gone(record: dict | None) -> bool:
    """True only when the owner ``record`` is provably no longer running: a process of this host that has ended."""
    if record is None or record.get("host") != socket.gethostname():
        return False
    if record.get("pid_namespace", "") != pid_namespace():  # another container, or another boot: cannot tell
        return False
    pid = record.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and pid != os.getpid() and not pid_running(pid)


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (when in doubt: yes)."""
    if pid <= 0:
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows: ask for its exit code instead
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists; invalid parameter: it does not
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is someone else's
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether ``pid`` has ended and only waits to be reaped (Linux's /proc says so): in a container whose first
    process is not an init, killed processes stay zombies for good, and they write nothing any more."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            text = stream.read(512)
    except OSError:
        return False
    state = text[text.rfind(b")") + 1:].split()[:1]  # the name, in parentheses, may hold spaces
    return state in ([b"Z"], [b"X"])


class OutputLock:
    """At most one export into an output folder at a time: the lock file ``.NAME.lock`` beside it.

    Where fcntl exists (Linux, macOS, the BSDs) the lock is an ``flock`` on that file, which the kernel releases
    however the holder ends (SIGKILL, power cut), so a left-over file is simply locked again. Where it does not
    (Windows), or the file system refuses flock, the lock is the file itself, created with O_CREAT | O_EXCL; a
    file whose process is no longer running on this host is stale and taken over. The file says who holds it
    (pid, host, start time) for the message that refuses a second export.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.path = output_dir.with_name(f".{output_dir.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`SegAlignError` naming the export that holds it."""
        for _ in range(20):
            created = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                created = False
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:  # released meanwhile: try again
                    continue
            locked = try_flock(fd)
            if locked is False or (locked is None and not created):
                holder = read_owner(_read_fd(fd))
                os.close(fd)
                if locked is None and owner_is_gone(holder):  # no flock here: a file left by a dead export
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    continue
                raise self.busy_error(holder)
            if not _same_file(fd, self.path):  # its holder removed it after we opened it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(owner()) + "\n").encode("utf-8"))
            self._fd = fd
            return
        raise SegAlignError(f"could not lock {self.path}: it keeps changing")

    def release(self) -> None:
        """Remove the lock file and let go of it (nothing if not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if os.name != "nt" and _same_file(fd, self.path):  # removed while held, so no one locks a dead file
                os.unlink(self.path)
        finally:
            os.close(fd)  # releases the flock
        if os.name == "nt":  # an open file cannot be removed there
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def busy_error(self, holder: dict | None) -> SegAlignError:
        """The error when another process holds the lock (``holder``: its owner record, if readable); a subclass
        locking something else says what."""
        who = f" (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')})" if holder else ""
        return SegAlignError(
            f"another export into {self.output_dir} is running{who}; wait, or use another folder (if none is "
            f"running, delete {self.path})"
        )


def try_flock(fd: int) -> bool | None:
    """flock ``fd`` without waiting: True if locked, False if another holds it, None if flock is not available."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP...: this file system has no locks
    return True


def _read_fd(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return os.pread(fd, 4096, 0).decode("utf-8") if hasattr(os, "pread") else os.read(fd, 4096).decode("utf-8")
    return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, theirs = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
